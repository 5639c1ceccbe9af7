create table customers (
    id bigserial primary key,
    email text not null unique,
    name text not null,
    created_at timestamptz not null default now()
);
create table accounts (
    id bigserial primary key,
    customer_id bigint not null references customers(id),
    balance_cents bigint not null default 0 check (balance_cents >= 0)
);
