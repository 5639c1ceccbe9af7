insert into products select g, 'product ' || g, 100 * g from generate_series(1, 10) g;
