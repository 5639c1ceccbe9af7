insert into plans values (1, 'free'), (2, 'pro');
insert into users (name, plan_id) select 'user' || g, 1 + g % 2 from generate_series(1, 1000) g;
