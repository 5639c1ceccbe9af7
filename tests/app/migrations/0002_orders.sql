create table products (
    id bigserial primary key,
    sku text not null unique,
    price_cents bigint not null
);
create table orders (
    id bigserial primary key,
    customer_id bigint not null references customers(id),
    placed_at timestamptz not null default now(),
    total_cents bigint not null default 0
);
create table order_lines (
    order_id bigint not null references orders(id) on delete cascade,
    product_id bigint not null references products(id),
    quantity int not null check (quantity > 0),
    primary key (order_id, product_id)
);
create index on orders (customer_id);
