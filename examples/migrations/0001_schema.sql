create table plans (id int primary key, name text not null);
create table users (
    id bigserial primary key,
    name text not null unique,
    plan_id int not null references plans(id)
);
create table events (id bigserial primary key, user_id bigint references users(id), kind text, at timestamptz default now());
