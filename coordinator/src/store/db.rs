//! The store's one seam to SQL: a connection to SQLite (the embedded
//! default) or PostgreSQL (several coordinators on one database), with the
//! same statements, parameters and rows for both. Statements are written
//! once, with numbered parameters (`?1`, rewritten `$1` for PostgreSQL);
//! values are the three kinds the schema uses (NULL, a 64-bit integer,
//! text), so a row reads the same whichever database it came from.
//!
//! Booleans are stored as integers 0/1 in both (SQLite's habit, kept so
//! old databases need no conversion), and the schema's `INTEGER` is
//! created as `BIGINT` on PostgreSQL (SQLite's integers are 64-bit).

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// Where the state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(std::path::PathBuf),
    /// A `postgres://` or `postgresql://` URL (it may hold a password:
    /// shown only through [`Location`]'s `Display`, which drops it).
    Postgres(String),
}

impl Location {
    /// `postgres://...` is PostgreSQL; anything else is a SQLite file.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_owned())
        } else {
            Location::Sqlite(s.into())
        }
    }
}

/// The location without credentials: `postgres://USER@HOST:PORT/DB`.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => match url::Url::parse(url) {
                Ok(u) => {
                    let host = u.host_str().unwrap_or("");
                    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                    write!(f, "postgres://{}@{host}{port}{}", u.username(), u.path())
                }
                Err(_) => write!(f, "postgres://(unparsable url)"),
            },
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// A value as stored: NULL, a 64-bit integer or text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::Text(s.clone())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(i64::from(n))
    }
}
impl From<u64> for Value {
    /// Sizes and counters: stored as i64 (two's complement above 2^63).
    fn from(n: u64) -> Self {
        Value::Int(n as i64)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Int(i64::from(b))
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
impl<T: Clone + Into<Value>> From<&Option<T>> for Value {
    fn from(v: &Option<T>) -> Self {
        v.clone().map_or(Value::Null, Into::into)
    }
}

/// `args![a, b, ...]`: statement parameters.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::store::db::Value::from($v)),*][..] };
}
pub(crate) use args;

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

impl Row {
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self.0.get(i).ok_or_else(|| anyhow!("no column {i}"))?;
        T::from_value(v).with_context(|| format!("column {i}"))
    }
}

/// A Rust type a stored value reads as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self>;
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Int(n) => Ok(*n),
            other => bail!("expected an integer, found {other:?}"),
        }
    }
}
impl FromValue for u64 {
    fn from_value(v: &Value) -> Result<Self> {
        Ok(i64::from_value(v)? as u64)
    }
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Result<Self> {
        let n = i64::from_value(v)?;
        u32::try_from(n).map_err(|_| anyhow!("{n} is out of range"))
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self> {
        Ok(i64::from_value(v)? != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => bail!("expected text, found {other:?}"),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// An open connection.
pub enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Sqlite(_) => "Conn::Sqlite",
            Conn::Postgres(_) => "Conn::Postgres",
        })
    }
}

impl Conn {
    pub fn open(at: &Location) -> Result<Self> {
        match at {
            Location::Sqlite(path) => {
                // Switching a new file to WAL takes an exclusive lock that
                // SQLite's busy handler does not wait for: coordinators
                // opening a new database at once retry here.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    match open_sqlite(path) {
                        Err(rusqlite::Error::SqliteFailure(e, _))
                            if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        r => return Ok(Conn::Sqlite(r?)),
                    }
                }
            }
            Location::Postgres(url) => {
                let mut cfg: postgres::Config = url.parse().map_err(|e| anyhow!("not a PostgreSQL URL: {e}"))?;
                cfg.application_name("diskferry");
                if cfg.get_connect_timeout().is_none() {
                    cfg.connect_timeout(Duration::from_secs(10));
                }
                // The error's text names neither the URL nor its password.
                let client = match cfg.get_ssl_mode() {
                    postgres::config::SslMode::Disable => cfg.connect(postgres::NoTls),
                    _ => cfg.connect(tls()?),
                };
                let client = client.map_err(|e| anyhow!("{}{}", pg_error(&e), tls_hint(&e)))?;
                Ok(Conn::Postgres(Box::new(client)))
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Conn::Postgres(_))
    }

    /// Run one statement; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute(sql, rusqlite::params_from_iter(args.iter()))? as u64),
            Conn::Postgres(c) => {
                let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                c.execute(pg_sql(sql).as_str(), &refs).map_err(|e| anyhow!("{}", pg_error(&e)))
            }
        }
    }

    pub fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        match self {
            Conn::Sqlite(c) => {
                let mut st = c.prepare(sql)?;
                let n = st.column_count();
                let rows = st.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    (0..n).map(|i| r.get_ref(i).map(sqlite_value)).collect::<rusqlite::Result<Vec<_>>>()
                })?;
                Ok(rows.map(|r| r.map(Row)).collect::<rusqlite::Result<_>>()?)
            }
            Conn::Postgres(c) => {
                let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                let rows = c.query(pg_sql(sql).as_str(), &refs).map_err(|e| anyhow!("{}", pg_error(&e)))?;
                rows.iter().map(pg_row).collect()
            }
        }
    }

    pub fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    pub fn query_one(&mut self, sql: &str, args: &[Value]) -> Result<Row> {
        self.query_opt(sql, args)?.ok_or_else(|| anyhow!("the query returned no row"))
    }

    /// Several statements, no parameters (migrations).
    pub fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(c) => c.batch_execute(&pg_schema(sql)).map_err(|e| anyhow!("{}", pg_error(&e))),
        }
    }

    /// Run `f` in a transaction that holds the database's write lock
    /// (SQLite: BEGIN IMMEDIATE). On PostgreSQL, [`Self::lock`] serialises
    /// what must be. Committed if `f` succeeds, rolled back if not.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        self.batch(if self.is_postgres() { "BEGIN" } else { "BEGIN IMMEDIATE" })?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Inside a transaction: hold `key`'s lock until it ends, across every
    /// coordinator on the database. SQLite's write lock already is one.
    pub fn lock(&mut self, key: &str) -> Result<()> {
        if self.is_postgres() {
            self.query("SELECT pg_advisory_xact_lock(hashtext(?1))::text", &[Value::from(key)])?;
        }
        Ok(())
    }
}

/// TLS to PostgreSQL (`sslmode=prefer`, the default, or `require`): the
/// server's certificate is verified against the system's roots and, if
/// set, `PGSSLROOTCERT` (a PEM file, libpq's variable), and must name the
/// host. `sslmode=disable` speaks without TLS (loopback, a Unix socket).
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = std::env::var_os("PGSSLROOTCERT").filter(|v| !v.is_empty()) {
        let ca = std::path::PathBuf::from(ca);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca)
            .with_context(|| format!("PGSSLROOTCERT: cannot read {}", ca.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("PGSSLROOTCERT: {} is not PEM", ca.display()))?;
        for c in certs {
            roots.add(c).with_context(|| format!("PGSSLROOTCERT: {}: bad certificate", ca.display()))?;
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// What to do about a certificate the client could not verify.
fn tls_hint(e: &postgres::Error) -> &'static str {
    let mut src: Option<&dyn StdError> = Some(e);
    while let Some(c) = src {
        if c.to_string().contains("certificate") {
            return " (the server's TLS certificate is not trusted: set PGSSLROOTCERT to its CA's PEM file, or \
                    sslmode=disable in the URL on a network you trust)";
        }
        src = c.source();
    }
    ""
}

fn open_sqlite(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(c)
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        // The schema has no REAL column; a stray one reads as whole units.
        ValueRef::Real(x) => Value::Int(x as i64),
        ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
    }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                _ => n.to_string().as_str().to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::INT4 | Type::INT2 | Type::BOOL | Type::TEXT | Type::VARCHAR | Type::NAME)
            || ty.name() == "unknown"
    }

    to_sql_checked!();
}

fn pg_row(r: &postgres::Row) -> Result<Row> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(|n| Value::Int(n.into())),
            Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(|n| Value::Int(n.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(|b| Value::Int(b.into())),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            ref t => bail!("column {} has type {t}, which the store does not read", col.name()),
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

/// `?N` placeholders as PostgreSQL's `$N` (outside quoted text).
fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The schema for PostgreSQL: SQLite's 64-bit `INTEGER` is `BIGINT`.
fn pg_schema(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find("INTEGER") {
        let before_ok = rest[..i].chars().last().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        let after = &rest[i + "INTEGER".len()..];
        let after_ok = after.chars().next().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && after_ok { "BIGINT" } else { "INTEGER" });
        rest = after;
    }
    out.push_str(rest);
    pg_sql(&out)
}

/// A PostgreSQL error as one line: the server's message and code, or the
/// client's (connection refused, ...). Never the connection string.
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => {
            let mut s = format!("PostgreSQL: {e}");
            let mut src = e.source();
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_types_for_postgres() {
        assert_eq!(pg_sql("SELECT ?1, '?2' WHERE a = ?12"), "SELECT $1, '?2' WHERE a = $12");
        assert_eq!(
            pg_schema("CREATE TABLE t (a INTEGER NOT NULL, b BIGINT, c_INTEGER TEXT)"),
            "CREATE TABLE t (a BIGINT NOT NULL, b BIGINT, c_INTEGER TEXT)"
        );
    }

    #[test]
    fn a_postgres_location_never_shows_its_password() {
        let l = Location::parse("postgres://df:s3cret@db.example:5433/diskferry?sslmode=disable");
        assert_eq!(l.to_string(), "postgres://df@db.example:5433/diskferry");
        assert!(!format!("{l:?}").contains("s3cret"));
        assert_eq!(
            Location::parse("/var/lib/diskferry/state.db"),
            Location::Sqlite("/var/lib/diskferry/state.db".into())
        );
    }
}
