//! Invariant 2: the audit tables reject UPDATE and DELETE (and TRUNCATE on PostgreSQL, even with
//! `session_replication_role = replica`), and a chain head only ever advances by one.

use crate::common;

use common::TestDb;
use killswitch::audit::{Actor, AuditEvent};
use killswitch::domain::ChainId;
use sqlx::AnyConnection;

const APPEND_ONLY: [&str; 3] = ["audit_entries", "audit_checkpoints", "audit_signing_keys"];

async fn seeded() -> (TestDb, AnyConnection) {
    let db = TestDb::new().await;
    let (store, _key) = db.store(2).await;
    let chain: ChainId = "contoso".parse().unwrap();
    for n in 0..4 {
        let event = AuditEvent::ConsentFailed {
            tenant_id: None,
            reason: format!("attempt {n}"),
        };
        store.append(&chain, &Actor::Service, &event).await.unwrap();
    }
    let conn = db.raw().await;
    (db, conn)
}

fn column_of(table: &str) -> &'static str {
    if table == "audit_signing_keys" {
        "public_key"
    } else {
        "hash"
    }
}

async fn count(conn: &mut AnyConnection, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn rejected(conn: &mut AnyConnection, sql: String) -> String {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut *conn)
        .await
    {
        Ok(done) => panic!("`{sql}` was accepted ({} rows)", done.rows_affected()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn update_and_delete_on_audit_tables_are_rejected() {
    let (_db, mut conn) = seeded().await;
    for table in APPEND_ONLY {
        let before = count(&mut conn, table).await;
        assert!(before > 0, "{table} should hold rows for this test");
        let column = column_of(table);
        let error = rejected(&mut conn, format!("UPDATE {table} SET {column} = 'forged'")).await;
        assert!(error.contains("append-only"), "{table}: {error}");
        let error = rejected(&mut conn, format!("DELETE FROM {table}")).await;
        assert!(error.contains("append-only"), "{table}: {error}");
        assert_eq!(count(&mut conn, table).await, before, "{table} lost rows");
    }
}

#[tokio::test]
async fn chain_heads_cannot_be_deleted_rewound_or_renamed() {
    let (_db, mut conn) = seeded().await;
    rejected(&mut conn, "DELETE FROM audit_heads".to_owned()).await;
    rejected(
        &mut conn,
        "UPDATE audit_heads SET seq = 1 WHERE chain = 'contoso'".to_owned(),
    )
    .await;
    rejected(
        &mut conn,
        "UPDATE audit_heads SET seq = seq WHERE chain = 'contoso'".to_owned(),
    )
    .await;
    rejected(
        &mut conn,
        "UPDATE audit_heads SET chain = 'fabrikam' WHERE chain = 'contoso'".to_owned(),
    )
    .await;
    let seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_heads WHERE chain = 'contoso'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(seq, 4);
}

#[tokio::test]
async fn truncate_is_rejected_on_postgres() {
    let (db, mut conn) = seeded().await;
    if !db.is_postgres() {
        eprintln!("TRUNCATE does not exist in SQLite; covered in the PostgreSQL pass");
        return;
    }
    for table in APPEND_ONLY.iter().chain(&["audit_heads"]) {
        let before = count(&mut conn, table).await;
        let error = rejected(&mut conn, format!("TRUNCATE {table} CASCADE")).await;
        assert!(error.contains("append-only"), "{table}: {error}");
        assert_eq!(count(&mut conn, table).await, before);
    }
}

#[tokio::test]
async fn replica_mode_does_not_switch_the_triggers_off_on_postgres() {
    let (db, mut conn) = seeded().await;
    if !db.is_postgres() {
        eprintln!("session_replication_role is PostgreSQL-only; covered in the PostgreSQL pass");
        return;
    }
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .unwrap();
    for table in APPEND_ONLY {
        let before = count(&mut conn, table).await;
        let column = column_of(table);
        for sql in [
            format!("UPDATE {table} SET {column} = 'forged'"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            let error = rejected(&mut conn, sql.clone()).await;
            assert!(error.contains("append-only"), "{sql}: {error}");
        }
        assert_eq!(count(&mut conn, table).await, before, "{table}");
    }
}

#[tokio::test]
async fn appends_still_work_after_rejected_tampering() {
    let (db, mut conn) = seeded().await;
    rejected(&mut conn, "DELETE FROM audit_entries".to_owned()).await;
    drop(conn);
    let (store, key) = db.store(2).await;
    let chain: ChainId = "contoso".parse().unwrap();
    // A second key registered on the same database; both stay trusted for their checkpoints.
    let appended = store
        .append(
            &chain,
            &Actor::Service,
            &AuditEvent::ConsentGranted {
                tenant_id: "t".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(appended.seq, 5);
    let keys = killswitch::reports::check::keyring(store.as_ref(), [key.public_key()])
        .await
        .unwrap();
    let report = killswitch::reports::check::check_chain(store.as_ref(), &keys, "contoso")
        .await
        .unwrap();
    assert_eq!(report.map(|s| s.entries), Ok(5));
}

/// The grants in docs/postgres.md are enough to run the service, and without UPDATE, DELETE or
/// TRUNCATE the application role is stopped by the database even before the triggers.
#[tokio::test]
async fn the_documented_least_privilege_role_can_append_but_not_rewrite_on_postgres() {
    let (db, mut owner) = seeded().await;
    if !db.is_postgres() {
        eprintln!("database roles are PostgreSQL-only; covered in the PostgreSQL pass");
        return;
    }
    let mut url = url::Url::parse(&db.url).unwrap();
    let database = url.path().trim_start_matches('/').to_owned();
    let role = format!("{database}_app");
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/postgres.md")).unwrap();
    let grants = docs
        .split("```sql")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let grants = grants
        .replace(" PASSWORD '…'", "")
        .replace("DATABASE killswitch ", &format!("DATABASE {database} "))
        .replace("killswitch_app", &role);
    sqlx::raw_sql(sqlx::AssertSqlSafe(grants))
        .execute(&mut owner)
        .await
        .unwrap();

    url.set_username(&role).unwrap();
    let app_db = common::TestDb {
        url: url.to_string(),
        dir: tempfile::tempdir().unwrap(),
    };
    let (store, _key) = app_db.store(2).await;
    let chain: ChainId = "contoso".parse().unwrap();
    let appended = store
        .append(
            &chain,
            &Actor::Service,
            &AuditEvent::ConsentGranted {
                tenant_id: "t".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(appended.seq, 5);

    // And for the service's own records: every table the migrations create is readable and
    // writable by the role, the audit tables append-only.
    let tables: Vec<(String, bool, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT table_name::text, \
                has_table_privilege('{role}', table_name::text, 'SELECT,INSERT'), \
                has_table_privilege('{role}', table_name::text, 'UPDATE') \
         FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'"
    )))
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert!(tables.len() >= 11, "{tables:?}");
    for (table, reads_and_inserts, updates) in &tables {
        let append_only = APPEND_ONLY.contains(&table.as_str());
        assert!(
            reads_and_inserts,
            "{role} cannot read or insert into {table}"
        );
        assert_eq!(*updates, !append_only, "{role} UPDATE privilege on {table}");
    }
    let customer = killswitch::customers::Customer {
        slug: "fabrikam".parse().unwrap(),
        name: "Fabrikam".into(),
        domain: "fabrikam.onmicrosoft.com".into(),
        tenant_id: killswitch::domain::TenantId::new(uuid::Uuid::new_v4()),
        policy: killswitch::customers::Policy::default(),
        created_at: killswitch::time::Timestamp::now(),
        connection: None,
    };
    store
        .add_customer(&customer, &Actor::Service)
        .await
        .unwrap();
    let mut policy = customer.policy.clone();
    policy.max_actions_per_hour = 7;
    store
        .update_policy(&customer, &policy, &Actor::Service)
        .await
        .unwrap();

    let mut app = app_db.raw().await;
    for sql in [
        "UPDATE audit_entries SET hash = 'x'",
        "DELETE FROM audit_entries",
        "TRUNCATE audit_entries",
    ] {
        let error = rejected(&mut app, sql.to_owned()).await;
        assert!(error.contains("permission denied"), "{sql}: {error}");
    }
    drop((app, store));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP OWNED BY {role}; DROP ROLE {role}"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
}
