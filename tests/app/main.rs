//! A suite shaped like an application's: migrations, a fixture with history (2,000 customers,
//! 20,000 orders), and ten tests that each do real work (a few hundred statements, a report, a
//! bulk update), written once and run in both modes. `examples/pool_suite.rs` times it with and
//! without the pool.

use pgclone::Golden;

fn shop() -> Golden {
    Golden::new("app_shop")
        .migrations("tests/app/migrations")
        .sql_file("tests/app/fixtures/shop.sql")
}

macro_rules! suite {
    ($module:ident, $mode:literal) => {
        mod $module {
            use pgclone::TestDb;

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn signing_up_creates_a_customer_and_an_account(db: TestDb) {
                let client = db.client();
                for i in 0..300 {
                    let row = client
                        .query_one(
                            "insert into customers (email, name) values ($1, $2) returning id",
                            &[&format!("new{i}@example.com"), &format!("New {i}")],
                        )
                        .await
                        .unwrap();
                    let id: i64 = row.get(0);
                    client
                        .execute("insert into accounts (customer_id) values ($1)", &[&id])
                        .await
                        .unwrap();
                }
                let n: i64 = client
                    .query_one("select count(*) from accounts", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(n, 2300);
            }

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn a_taken_email_is_refused(db: TestDb) {
                let err = db
                    .client()
                    .execute(
                        "insert into customers (email, name) values ('customer1@example.com', 'x')",
                        &[],
                    )
                    .await
                    .unwrap_err();
                assert_eq!(
                    err.code(),
                    Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
                );
            }

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn placing_orders_updates_their_totals(db: TestDb) {
                let mut client = db.connect().await.unwrap();
                for customer in 1..=150i64 {
                    let tx = client.transaction().await.unwrap();
                    let order: i64 = tx
                        .query_one(
                            "insert into orders (customer_id) values ($1) returning id",
                            &[&customer],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    tx.execute(
                        "insert into order_lines (order_id, product_id, quantity) values ($1, 1, 2), ($1, 2, 1)",
                        &[&order],
                    )
                    .await
                    .unwrap();
                    tx.execute(
                        "update orders set total_cents = (select sum(l.quantity * p.price_cents) from order_lines l join products p on p.id = l.product_id where l.order_id = $1) where id = $1",
                        &[&order],
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                }
                let n: i64 = client
                    .query_one("select count(*) from orders where total_cents > 0", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(n, 20150);
            }

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn transfers_keep_the_total_balance(db: TestDb) {
                let mut client = db.connect().await.unwrap();
                for i in 0..200i64 {
                    let tx = client.transaction().await.unwrap();
                    let (from, to) = (1 + i % 2000, 1 + (i * 13 + 7) % 2000);
                    tx.execute(
                        "update accounts set balance_cents = balance_cents - 100 where customer_id = $1",
                        &[&from],
                    )
                    .await
                    .unwrap();
                    tx.execute(
                        "update accounts set balance_cents = balance_cents + 100 where customer_id = $1",
                        &[&to],
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                }
                let total: i64 = client
                    .query_one("select sum(balance_cents)::bigint from accounts", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(total, 2000 * 10000);
            }

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn an_overdraft_is_refused(db: TestDb) {
                let err = db
                    .client()
                    .execute(
                        "update accounts set balance_cents = balance_cents - 10001 where customer_id = 5",
                        &[],
                    )
                    .await
                    .unwrap_err();
                assert_eq!(
                    err.code(),
                    Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION)
                );
            }

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn the_revenue_report_adds_up(db: TestDb) {
                let client = db.client();
                let rows = client
                    .query(
                        "select p.sku, sum(l.quantity * p.price_cents)::bigint as revenue
                         from order_lines l join products p on p.id = l.product_id
                         group by p.sku order by revenue desc",
                        &[],
                    )
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 200);
                let by_product: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
                let by_order: i64 = client
                    .query_one("select sum(total_cents)::bigint from orders", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(by_product, by_order);
            }

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn a_price_change_reprices_every_open_order(db: TestDb) {
                let client = db.client();
                client
                    .batch_execute(
                        "update products set price_cents = price_cents * 2;
                         update orders o set total_cents = s.total
                         from (select l.order_id, sum(l.quantity * p.price_cents) as total
                               from order_lines l join products p on p.id = l.product_id
                               group by l.order_id) s
                         where s.order_id = o.id",
                    )
                    .await
                    .unwrap();
                let odd: i64 = client
                    .query_one("select count(*) from orders where total_cents % 2 = 1", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(odd, 0);
            }

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn deleting_a_customers_orders_removes_their_lines(db: TestDb) {
                let client = db.client();
                let before: i64 = client
                    .query_one("select count(*) from order_lines", &[])
                    .await
                    .unwrap()
                    .get(0);
                let deleted = client
                    .execute("delete from orders where customer_id <= 200", &[])
                    .await
                    .unwrap();
                assert!(deleted > 0);
                let orphans: i64 = client
                    .query_one(
                        "select count(*) from order_lines l left join orders o on o.id = l.order_id where o.id is null",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(orphans, 0);
                let after: i64 = client
                    .query_one("select count(*) from order_lines", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert!(after < before);
            }

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn the_best_customers_are_ranked_by_spend(db: TestDb) {
                let client = db.client();
                for _ in 0..20 {
                    let rows = client
                        .query(
                            "select customer_id, sum(total_cents)::bigint as spend from orders
                             group by customer_id order by spend desc, customer_id limit 10",
                            &[],
                        )
                        .await
                        .unwrap();
                    assert_eq!(rows.len(), 10);
                    let spend: Vec<i64> = rows
                        .iter()
                        .map(|r| r.get::<_, i64>(1))
                        .collect();
                    assert!(spend.windows(2).all(|w| w[0] >= w[1]));
                }
            }

            #[pgclone::test(golden = crate::shop, mode = $mode)]
            async fn a_new_product_sells(db: TestDb) {
                let client = db.client();
                let product: i64 = client
                    .query_one(
                        "insert into products (sku, price_cents) values ('NEW', 999) returning id",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                for order in 1..=300i64 {
                    client
                        .execute(
                            "insert into order_lines (order_id, product_id, quantity) values ($1, $2, 1)",
                            &[&order, &product],
                        )
                        .await
                        .unwrap();
                }
                let sold: i64 = client
                    .query_one(
                        "select sum(quantity)::bigint from order_lines where product_id = $1",
                        &[&product],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(sold, 300);
            }
        }
    };
}

suite!(database, "database");
suite!(cluster, "cluster");
