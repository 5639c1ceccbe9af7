use pgclone::{Golden, Mode, TestDb};

fn app() -> Golden {
    Golden::new("smoke")
        .migrations("examples/migrations")
        .sql("insert into plans values (3, 'team')")
}

#[pgclone::test(golden = app)]
async fn cluster_mode_sees_the_fixture(db: TestDb) {
    let n: i64 = db
        .client()
        .query_one("select count(*) from users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
    let plans: i64 = db
        .client()
        .query_one("select count(*) from plans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(plans, 3);
    assert_eq!(db.dbname(), "smoke");
}

#[pgclone::test(golden = app, mode = "database")]
async fn database_mode_sees_the_fixture(db: TestDb) -> Result<(), Box<dyn std::error::Error>> {
    let n: i64 = db
        .client()
        .query_one("select count(*) from users", &[])
        .await?
        .get(0);
    assert_eq!(n, 1000);
    assert!(db.dbname().starts_with("smoke_"));
    Ok(())
}

#[pgclone::test]
fn sync_empty_cluster(db: TestDb) {
    assert_eq!(db.dbname(), "postgres");
    assert!(db
        .connection_string()
        .starts_with("postgresql://postgres@%2F"));
}

#[tokio::test]
async fn fork_holds_the_state_at_fork_time() {
    let db = TestDb::start(&app()).await.unwrap();
    db.client()
        .execute("insert into plans values (10, 'before')", &[])
        .await
        .unwrap();
    let fork = db.fork().await.unwrap();
    db.client()
        .execute("insert into plans values (11, 'after')", &[])
        .await
        .unwrap();
    let names = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let in_fork = names(
        fork.client()
            .query("select name from plans where id >= 10 order by id", &[])
            .await
            .unwrap(),
    );
    assert_eq!(in_fork, vec!["before".to_string()]);
    let _ = Mode::Cluster;
}
