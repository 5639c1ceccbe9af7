create table products (id int primary key, name text not null, price_cents int not null);
create table kv (k int primary key, v text not null);
