//! The replication client: one binlog stream from a recorded position, filtered to the migrated
//! table and its changelog. It yields the **keys** of changed rows (nothing else is needed: the
//! applier re-reads rows from the table) and the changelog's sentinels.
//!
//! Invariants:
//! - **No row change is ever skipped.** Any event that may carry rows and cannot be decoded
//!   (MariaDB's compressed row events 0xa6–0xab, unknown types, an INCIDENT) stops the
//!   migration; so does a statement-based change or DDL that names the table, a row image
//!   without the key columns, and an event whose CRC32 does not match.
//! - **Reconnects neither skip nor replay blindly.** The stream remembers the start of the
//!   transaction it is in; after a dropped connection it restarts there. Keys of that
//!   transaction may be sent twice, which is harmless (the key set deduplicates).
//! - Every error names the binlog position.
//!
//! MariaDB traps handled (measured here, see MARIADB-NOTES): `@mariadb_slave_capability=4` for
//! native GTID events, decoded by hand; the first (fake) ROTATE arrives before the FDE with its
//! CRC still attached to the file name; fake rotates have timestamp 0 and log_pos 0; the server
//! sends a heartbeat every second when idle, so a read timeout detects a dead connection.
//!
//! Decoding: rows are decoded by mysql_common, and only the key columns are kept (see the issue
//! note: a hand-written partial decoder would need every type's length rules, for little gain).

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::conn::{ConnError, Endpoint, Flavor};
use crate::key::{Key, KeyColumn, KeyPart, KeyValueError};
use crate::progress::Progress;
use crate::sql::{server_code, server_message};

/// How long the stream may stay silent before the connection is considered dead. The server
/// sends a heartbeat every [`HEARTBEAT_PERIOD`] when it has nothing else to send.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);
/// Reconnect attempts in a row before giving up.
pub const MAX_RECONNECTS: u32 = 10;

/// A position in the binlog: file and offset, ordered; the last GTID seen, where known.
#[derive(Debug, Clone, Eq, serde::Serialize)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
    pub gtid: Option<String>,
}

impl BinlogPos {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        BinlogPos {
            file: file.into(),
            pos,
            gtid: None,
        }
    }

    /// The primary's current position (`SHOW MASTER STATUS`).
    pub async fn current(conn: &mut Conn) -> Result<BinlogPos, mysql_async::Error> {
        let row: Option<mysql_async::Row> =
            conn.query_first("SHOW /* zdm-ost */ MASTER STATUS").await?;
        let row = row.ok_or_else(|| {
            mysql_async::Error::Other("SHOW MASTER STATUS is empty: binary logging is off".into())
        })?;
        let file: String = row.get(0).unwrap_or_default();
        let pos: u64 = row.get(1).unwrap_or_default();
        Ok(BinlogPos::new(file, pos))
    }
}

impl PartialEq for BinlogPos {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && self.pos == other.pos
    }
}

impl PartialOrd for BinlogPos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BinlogPos {
    fn cmp(&self, other: &Self) -> Ordering {
        // Binlog file names carry a zero-padded sequence number, so they sort as text.
        (self.file.as_str(), self.pos).cmp(&(other.file.as_str(), other.pos))
    }
}

impl fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, " (gtid {g})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error("binlog stream: {0}")]
    Connect(#[from] ConnError),
    #[error("binlog stream at {pos}: the server no longer has this binlog position ({reason}). The binlog was purged or rotated away; start the migration over")]
    Purged { pos: BinlogPos, reason: String },
    #[error("binlog stream: server id {id} is already used by another replica or binlog reader ({reason}). Pass a different --replica-server-id")]
    ServerIdClash { id: u32, reason: String },
    #[error("binlog stream at {pos}: {reason}")]
    Read {
        pos: BinlogPos,
        reason: String,
        transient: bool,
    },
    #[error("binlog stream at {pos}: CRC32 mismatch in an event of type {kind:#04x} (computed {computed:08x}, event carries {stored:08x}): the event was corrupted on disk or on the wire")]
    Checksum {
        pos: BinlogPos,
        kind: u8,
        computed: u32,
        stored: u32,
    },
    #[error("binlog stream at {pos}: an event of type {kind:#04x} ({what}) cannot be decoded, and skipping it could lose row changes. {fix}")]
    Unsupported {
        pos: BinlogPos,
        kind: u8,
        what: &'static str,
        fix: &'static str,
    },
    #[error("binlog stream at {pos}: {target} was changed by another statement while migrating ({query}): {why}. The ghost table no longer matches it; run the migration again once that change is done")]
    DdlOnTable {
        pos: BinlogPos,
        target: String,
        query: String,
        why: &'static str,
    },
    #[error("binlog stream at {pos}: a statement-based change that may reach {target} ({query}): some session writes with binlog_format other than ROW, and zdm-ost cannot tell which rows it changed. Make every session use binlog_format=ROW and run the migration again")]
    StatementChange {
        pos: BinlogPos,
        target: String,
        query: String,
    },
    #[error("binlog stream at {pos}: a row image of {target} lacks key column `{column}`: some session writes with binlog_row_image other than FULL. Make every session use binlog_row_image=FULL and run the migration again")]
    MissingKeyColumn {
        pos: BinlogPos,
        target: String,
        column: String,
    },
    #[error("binlog stream at {pos}: {target} has {got} columns in the binlog, {expected} expected: its definition changed while migrating")]
    ColumnCount {
        pos: BinlogPos,
        target: String,
        got: usize,
        expected: usize,
    },
    #[error("binlog stream at {pos}: {source}")]
    Key {
        pos: BinlogPos,
        source: Box<KeyValueError>,
    },
}

impl BinlogError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            BinlogError::Read {
                transient: true,
                ..
            }
        )
    }
}

/// What the stream tells the applier.
#[derive(Debug)]
pub enum StreamMsg {
    /// Keys of rows of the migrated table changed by one rows event (old and new key of an
    /// UPDATE that changes the key both included).
    Keys(Vec<Key>),
    /// A sentinel written to the changelog, with the position of its rows event.
    Sentinel(String, BinlogPos),
    /// Every change before this position has been sent: a transaction boundary, sent at most
    /// every [`POSITION_EVERY`] (and when idle).
    Position(BinlogPos),
}

/// How often the stream reports its transaction-boundary position.
pub const POSITION_EVERY: Duration = Duration::from_millis(100);

/// What to follow.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub endpoint: Endpoint,
    pub flavor: Flavor,
    pub server_id: u32,
    pub db: String,
    pub table: String,
    pub changelog: String,
    /// The key columns, with their positions in the original table.
    pub key: Vec<KeyColumn>,
    /// A trigger or stored routine of another database names the table: statement-format DML
    /// there may reach it ([`crate::statement::Reading`]).
    pub reached_from_elsewhere: bool,
    /// `lower_case_table_names` is not 0: names in statements compare case-insensitively.
    pub names_case_insensitive: bool,
    /// How many columns the original table has.
    pub columns: usize,
}

/// The stream as a task that the orchestrator can stop and restart.
pub struct StreamTask {
    spec: StreamSpec,
    progress: Arc<Progress>,
    root: CancellationToken,
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), BinlogError>>>,
}

/// Messages buffered between the stream and the applier.
pub const CHANNEL_CAPACITY: usize = 4096;

impl StreamTask {
    pub fn start(
        spec: StreamSpec,
        pos: BinlogPos,
        progress: Arc<Progress>,
        root: &CancellationToken,
    ) -> (StreamTask, mpsc::Receiver<StreamMsg>) {
        let mut task = StreamTask {
            spec,
            progress,
            root: root.clone(),
            stop: root.child_token(),
            handle: None,
        };
        let rx = task.restart(pos);
        (task, rx)
    }

    /// (Re)starts reading at `pos`; the previous receiver is abandoned.
    pub fn restart(&mut self, pos: BinlogPos) -> mpsc::Receiver<StreamMsg> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        self.stop = self.root.child_token();
        self.handle = Some(tokio::spawn(stream(
            self.spec.clone(),
            pos,
            tx,
            Arc::clone(&self.progress),
            self.stop.clone(),
        )));
        rx
    }

    /// Stops reading and returns how the stream ended.
    pub async fn stop(&mut self) -> Result<(), BinlogError> {
        self.stop.cancel();
        self.join().await
    }

    /// Waits for the stream to end (after a stop, or on its own error).
    pub async fn join(&mut self) -> Result<(), BinlogError> {
        match self.handle.take() {
            None => Ok(()),
            Some(h) => h.await.unwrap_or_else(|join| {
                Err(BinlogError::Read {
                    pos: self
                        .progress
                        .binlog_pos()
                        .unwrap_or_else(|| BinlogPos::new("?", 0)),
                    reason: format!("the stream task crashed: {join}"),
                    transient: false,
                })
            }),
        }
    }
}

impl StreamSpec {
    fn target(&self) -> String {
        crate::sql::qualified(&self.db, &self.table)
    }
}

/// Streams from `start` until cancelled or until the receiver is dropped.
pub async fn stream(
    spec: StreamSpec,
    start: BinlogPos,
    tx: mpsc::Sender<StreamMsg>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<(), BinlogError> {
    let mut state = State {
        resume: start.clone(),
        current: start,
        trx_start: None,
        pending_gtid: None,
    };
    let mut failures = 0u32;
    loop {
        match run_once(&spec, &mut state, &tx, &progress, &cancel, &mut failures).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && failures < MAX_RECONNECTS => {
                failures += 1;
                let pause = Duration::from_millis(200 * u64::from(failures));
                tracing::warn!(
                    "{e}; reconnecting from {} in {} ms (attempt {failures})",
                    state.resume,
                    pause.as_millis()
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

struct State {
    /// Where a new connection starts: the start of the transaction being read, or the end of
    /// the last complete one.
    resume: BinlogPos,
    /// The end of the last event read.
    current: BinlogPos,
    trx_start: Option<BinlogPos>,
    pending_gtid: Option<String>,
}

const ROTATE: u8 = 0x04;
const QUERY: u8 = 0x02;
const FDE: u8 = 0x0f;
const XID: u8 = 0x10;
const INCIDENT: u8 = 0x1a;
const HEARTBEAT: u8 = 0x1b;
const MYSQL_GTID: u8 = 0x21;
const MYSQL_ANON_GTID: u8 = 0x22;
const MARIADB_GTID: u8 = 0xa2;

async fn run_once(
    spec: &StreamSpec,
    st: &mut State,
    tx: &mpsc::Sender<StreamMsg>,
    progress: &Progress,
    cancel: &CancellationToken,
    failures: &mut u32,
) -> Result<(), BinlogError> {
    let read_err = |pos: &BinlogPos, e: &mysql_async::Error| -> BinlogError {
        match server_code(e) {
            Some(1236) => BinlogError::Purged {
                pos: pos.clone(),
                reason: server_message(e),
            },
            Some(4052) => BinlogError::ServerIdClash {
                id: spec.server_id,
                reason: server_message(e),
            },
            Some(_) => BinlogError::Read {
                pos: pos.clone(),
                reason: server_message(e),
                transient: crate::sql::is_retryable(e),
            },
            None => BinlogError::Read {
                pos: pos.clone(),
                reason: e.to_string(),
                transient: true,
            },
        }
    };
    let mut conn: Conn = match spec.endpoint.connect().await {
        Ok(c) => c,
        Err(ConnError::Unreachable { addr, reason }) => {
            return Err(BinlogError::Read {
                pos: st.resume.clone(),
                reason: format!("cannot connect to {addr}: {reason}"),
                transient: true,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let period_ns = HEARTBEAT_PERIOD.as_nanos() as u64;
    let mut setup = vec![format!("SET @master_heartbeat_period = {period_ns}")];
    if spec.flavor == Flavor::MariaDb {
        setup.push("SET @mariadb_slave_capability = 4".into());
    }
    for s in setup {
        conn.query_drop(&s)
            .await
            .map_err(|e| read_err(&st.resume, &e))?;
    }
    let conn_id = conn.id();
    let start = st.resume.clone();
    let request = BinlogStreamRequest::new(spec.server_id)
        .with_filename(start.file.as_bytes())
        .with_pos(start.pos);
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| read_err(&start, &e))?;
    tracing::info!(
        "binlog reader connected at {start} (server id {}, connection {conn_id})",
        spec.server_id
    );
    st.current = start.clone();
    st.trx_start = None;
    let mut fde_seen = false;
    let mut last_position_sent = std::time::Instant::now();
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(READ_TIMEOUT, stream.next()) => n,
            _ = cancel.cancelled() => return Ok(()),
        };
        let ev: Event = match next {
            Err(_) => {
                return Err(BinlogError::Read {
                    pos: st.current.clone(),
                    reason: format!(
                        "nothing received for {} s (not even a heartbeat)",
                        READ_TIMEOUT.as_secs()
                    ),
                    transient: true,
                })
            }
            Ok(None) => {
                return Err(BinlogError::Read {
                    pos: st.current.clone(),
                    reason: "the server ended the stream".into(),
                    transient: true,
                })
            }
            Ok(Some(Err(e))) => return Err(read_err(&st.current, &e)),
            Ok(Some(Ok(ev))) => ev,
        };
        *failures = 0;
        let h = ev.header();
        let kind = h.event_type_raw();
        let log_pos = u64::from(h.log_pos());
        let event_start = BinlogPos::new(
            st.current.file.clone(),
            log_pos.saturating_sub(u64::from(h.event_size())),
        );
        if kind == FDE {
            fde_seen = true;
        }
        if fde_seen {
            verify_checksum(&ev, &st.current)?;
        }
        let decode_err = |e: std::io::Error, at: &BinlogPos| BinlogError::Read {
            pos: at.clone(),
            reason: format!("cannot decode an event of type {kind:#04x}: {e}"),
            transient: false,
        };
        match kind {
            ROTATE => {
                if let Ok(Some(EventData::RotateEvent(r))) = ev.read_data() {
                    let mut name = r.name_raw().to_vec();
                    // Before the FDE the event's CRC is still attached to the name.
                    if !fde_seen
                        && name.len() > 4
                        && !String::from_utf8_lossy(&name).eq(&st.current.file)
                    {
                        name.truncate(name.len() - 4);
                    }
                    let name = String::from_utf8_lossy(&name).into_owned();
                    let fake = h.timestamp() == 0 && h.log_pos() == 0;
                    if fake {
                        if name != st.current.file {
                            st.current = BinlogPos::new(name, r.position().max(4));
                        }
                    } else {
                        st.current = BinlogPos::new(name, r.position());
                        if st.trx_start.is_none() {
                            st.resume = st.current.clone();
                        }
                    }
                }
                continue;
            }
            MARIADB_GTID => {
                st.trx_start = Some(event_start);
                let d = ev.data();
                if d.len() >= 12 {
                    let seq = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
                    let domain = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
                    st.pending_gtid = Some(format!("{domain}-{}-{seq}", h.server_id()));
                }
            }
            MYSQL_GTID | MYSQL_ANON_GTID => st.trx_start = Some(event_start),
            0xa0 | 0xa1 | 0xa3 | 0xa4 => {} // annotate rows, checkpoint, gtid list, start encryption
            0xa5..=0xab => {
                return Err(BinlogError::Unsupported {
                    pos: event_start,
                    kind,
                    what: "MariaDB compressed event",
                    fix: "Set log_bin_compress=OFF on the primary and run the migration again",
                })
            }
            INCIDENT => {
                return Err(BinlogError::Unsupported {
                    pos: event_start,
                    kind,
                    what: "incident: the primary may have lost binlog events",
                    fix: "Check the primary's error log, then run the migration again",
                })
            }
            HEARTBEAT | FDE => {}
            XID => end_trx(st, log_pos),
            QUERY => {
                let Ok(Some(EventData::QueryEvent(q))) = ev.read_data() else {
                    return Err(decode_err(
                        std::io::Error::other("not a query event"),
                        &event_start,
                    ));
                };
                let query = q.query().trim().to_string();
                let upper = query.to_ascii_uppercase();
                if upper == "BEGIN" || upper.starts_with("XA START") {
                    if st.trx_start.is_none() {
                        st.trx_start = Some(event_start);
                    }
                } else if upper == "COMMIT"
                    || upper == "ROLLBACK"
                    || upper.starts_with("XA END")
                    || upper.starts_with("XA COMMIT")
                {
                    end_trx(st, log_pos);
                } else {
                    let reading = statement_reading(&q, spec);
                    let verdict = crate::statement::classify(
                        &query,
                        &q.schema(),
                        &spec.db,
                        &spec.table,
                        reading,
                    );
                    if let crate::statement::Verdict::Stops(why) = verdict {
                        return Err(stop_for(spec, event_start, query, why));
                    }
                    // A DDL statement is its own transaction (no XID follows it); a DML
                    // statement elsewhere is followed by its COMMIT or XID.
                    let code = crate::ddl::executable_comments_as_code(&query, false);
                    if !is_dml(&code) {
                        end_trx(st, log_pos);
                    }
                }
            }
            _ => match ev.read_data() {
                Ok(Some(EventData::RowsEvent(re))) => {
                    handle_rows(spec, &stream, &re, &event_start, tx).await?;
                }
                // the end of an XA transaction's prepared part (its rows came before it)
                Ok(Some(EventData::XaPrepareLogEvent(_))) => end_trx(st, log_pos),
                Ok(Some(EventData::ExecuteLoadQueryEvent(l))) => {
                    // LOAD DATA written as a statement: its rows are not in the binlog
                    let query = l.query().trim().to_string();
                    let verdict = crate::statement::classify(
                        &query,
                        &l.schema(),
                        &spec.db,
                        &spec.table,
                        crate::statement::Reading {
                            reached_from_elsewhere: spec.reached_from_elsewhere,
                            names_case_insensitive: spec.names_case_insensitive,
                            ..Default::default()
                        },
                    );
                    if let crate::statement::Verdict::Stops(why) = verdict {
                        return Err(stop_for(spec, event_start, query, why));
                    }
                }
                Ok(Some(data)) if !understood(&data) => {
                    return Err(BinlogError::Unsupported {
                        pos: event_start,
                        kind,
                        what: not_understood(&data),
                        fix: "Turn it off for the sessions that write it (binlog_transaction_compression=OFF on MySQL) and run the migration again",
                    })
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(BinlogError::Unsupported {
                        pos: event_start,
                        kind,
                        what: "unknown event type",
                        fix: "Report this server version to the zdm-ost developers",
                    })
                }
                Err(e) => return Err(decode_err(e, &event_start)),
            },
        }
        if log_pos != 0 {
            st.current.pos = log_pos;
            if st.trx_start.is_none() && kind != MARIADB_GTID {
                st.resume = st.current.clone();
            }
        }
        progress.set_binlog_pos(&st.current);
        if st.trx_start.is_none() && last_position_sent.elapsed() >= POSITION_EVERY {
            last_position_sent = std::time::Instant::now();
            if tx
                .send(StreamMsg::Position(st.resume.clone()))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        if tx.is_closed() {
            return Ok(());
        }
    }
}

/// How a QUERY event's text is read: its own sql_mode says whether `"x"` is a name.
fn statement_reading(
    q: &mysql_async::binlog::events::QueryEvent<'_>,
    spec: &StreamSpec,
) -> crate::statement::Reading {
    use mysql_async::binlog::events::StatusVarVal;
    use mysql_async::binlog::StatusVarKey;
    let mode = q
        .status_vars()
        .get_status_var(StatusVarKey::SqlMode)
        .and_then(|v| match v.get_value() {
            Ok(StatusVarVal::SqlMode(m)) => Some(m.0),
            _ => None,
        })
        .unwrap_or(0);
    crate::statement::Reading {
        ansi_quotes: mode & 0x4 != 0,
        no_backslash_escapes: mode & 0x0010_0000 != 0,
        reached_from_elsewhere: spec.reached_from_elsewhere,
        names_case_insensitive: spec.names_case_insensitive,
    }
}

/// The error for a statement that stops the run: statement-format DML, or a change of the
/// table's definition.
fn stop_for(spec: &StreamSpec, pos: BinlogPos, query: String, why: &'static str) -> BinlogError {
    let target = spec.target();
    if is_dml(&crate::ddl::executable_comments_as_code(&query, false)) {
        BinlogError::StatementChange { pos, target, query }
    } else {
        BinlogError::DdlOnTable {
            pos,
            target,
            query,
            why,
        }
    }
}

fn is_dml(sql: &str) -> bool {
    let upper = sql
        .trim_start()
        .trim_start_matches('(')
        .to_ascii_uppercase();
    [
        "INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD", "WITH", "CALL",
    ]
    .iter()
    .any(|w| upper.starts_with(w))
}

/// Whether an event mysql_common decoded is one zdm-ost understands: it either carries
/// nothing that changes rows, or is handled above. Anything else stops the run (fail closed).
pub fn understood(data: &EventData<'_>) -> bool {
    matches!(
        data,
        EventData::FormatDescriptionEvent(_)
            | EventData::RotateEvent(_)
            | EventData::XidEvent(_)
            | EventData::TableMapEvent(_)
            | EventData::HeartbeatEvent
            | EventData::IntvarEvent(_)
            | EventData::RandEvent(_)
            | EventData::UserVarEvent(_)
            | EventData::BeginLoadQueryEvent(_)
            | EventData::RowsQueryEvent(_)
            | EventData::GtidEvent(_)
            | EventData::AnonymousGtidEvent(_)
            | EventData::PreviousGtidsEvent(_)
            | EventData::StopEvent
            | EventData::IgnorableEvent(_)
            | EventData::StartEventV3(_)
    )
}

fn not_understood(data: &EventData<'_>) -> &'static str {
    match data {
        EventData::TransactionPayloadEvent(_) => {
            "a compressed transaction payload (MySQL binlog_transaction_compression), whose row events zdm-ost does not decode"
        }
        EventData::LoadEvent(_)
        | EventData::NewLoadEvent(_)
        | EventData::CreateFileEvent(_)
        | EventData::AppendBlockEvent(_)
        | EventData::ExecLoadEvent(_)
        | EventData::DeleteFileEvent(_) => "an old-style LOAD DATA event",
        _ => "an event zdm-ost does not understand",
    }
}

fn end_trx(st: &mut State, log_pos: u64) {
    st.trx_start = None;
    st.current.pos = log_pos;
    if let Some(g) = st.pending_gtid.take() {
        st.current.gtid = Some(g);
    }
    st.resume = st.current.clone();
}

fn verify_checksum(ev: &Event, at: &BinlogPos) -> Result<(), BinlogError> {
    let Some(stored) = ev.checksum() else {
        return Ok(());
    };
    if !matches!(
        ev.footer().get_checksum_alg(),
        Ok(Some(
            mysql_async::binlog::BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32
        ))
    ) {
        return Ok(());
    }
    let h = ev.header();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h.timestamp().to_le_bytes());
    hasher.update(&[h.event_type_raw()]);
    hasher.update(&h.server_id().to_le_bytes());
    hasher.update(&h.event_size().to_le_bytes());
    hasher.update(&h.log_pos().to_le_bytes());
    // LOG_EVENT_BINLOG_IN_USE_F is cleared when the binlog is closed, and so before hashing.
    hasher.update(&(h.flags_raw() & !0x0001).to_le_bytes());
    hasher.update(ev.data());
    if h.event_type_raw() == FDE {
        hasher.update(&[mysql_async::binlog::BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32 as u8]);
    }
    let computed = hasher.finalize();
    let stored = u32::from_le_bytes(stored);
    if computed != stored {
        return Err(BinlogError::Checksum {
            pos: at.clone(),
            kind: h.event_type_raw(),
            computed,
            stored,
        });
    }
    Ok(())
}

async fn handle_rows(
    spec: &StreamSpec,
    stream: &mysql_async::BinlogStream,
    re: &RowsEventData<'_>,
    at: &BinlogPos,
    tx: &mpsc::Sender<StreamMsg>,
) -> Result<(), BinlogError> {
    let Some(tme) = stream.get_tme(re.table_id()) else {
        return Err(BinlogError::Read {
            pos: at.clone(),
            reason: format!("rows event for unknown table id {}", re.table_id()),
            transient: false,
        });
    };
    if tme.database_name() != spec.db.as_str() {
        return Ok(());
    }
    let table = tme.table_name();
    let is_orig = table == spec.table.as_str();
    let is_log = table == spec.changelog.as_str();
    if !is_orig && !is_log {
        return Ok(());
    }
    let decode = |e: std::io::Error| BinlogError::Read {
        pos: at.clone(),
        reason: format!("cannot decode a rows event of `{}`.`{table}`: {e}", spec.db),
        transient: false,
    };
    if is_log {
        for row in re.rows(tme) {
            let (_, after) = row.map_err(decode)?;
            if let Some(after) = after {
                let text = |i: usize| match after.as_ref(i) {
                    Some(BinlogValue::Value(mysql_async::Value::Bytes(b))) => {
                        Some(String::from_utf8_lossy(b).into_owned())
                    }
                    _ => None,
                };
                if text(1).as_deref() == Some("sentinel") {
                    if let Some(token) = text(2) {
                        if tx
                            .send(StreamMsg::Sentinel(token, at.clone()))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                }
            }
        }
        return Ok(());
    }
    let got = tme.columns_count() as usize;
    if got != spec.columns {
        return Err(BinlogError::ColumnCount {
            pos: at.clone(),
            target: spec.target(),
            got,
            expected: spec.columns,
        });
    }
    let before_bits = re.columns_before_image();
    let after_bits = re.columns_after_image();
    let mut keys = Vec::new();
    for row in re.rows(tme) {
        let (before, after) = row.map_err(decode)?;
        let before_key = match &before {
            Some(r) => Some(extract_key(spec, r, before_bits, None, at)?),
            None => None,
        };
        if let Some(r) = &after {
            keys.push(extract_key(spec, r, after_bits, before_key.as_ref(), at)?);
        }
        if let Some(k) = before_key {
            keys.push(k);
        }
    }
    if !keys.is_empty() && tx.send(StreamMsg::Keys(keys)).await.is_err() {
        return Ok(());
    }
    Ok(())
}

/// The key of one row image. A key column missing from an UPDATE's after image did not
/// change: its value comes from the before image.
fn extract_key(
    spec: &StreamSpec,
    row: &BinlogRow,
    bits: Option<&bitvec::slice::BitSlice<u8>>,
    before: Option<&Key>,
    at: &BinlogPos,
) -> Result<Key, BinlogError> {
    let mut parts = Vec::with_capacity(spec.key.len());
    for (i, col) in spec.key.iter().enumerate() {
        let idx = match bits {
            Some(b) if b.get(col.ordinal).map(|x| *x).unwrap_or(false) => {
                Some(b[..col.ordinal].count_ones())
            }
            Some(_) => None,
            None => Some(col.ordinal),
        };
        let value = idx.and_then(|i| row.as_ref(i));
        match value {
            Some(BinlogValue::Value(v)) => {
                parts.push(KeyPart::from_binlog_value(v, col).map_err(|source| {
                    BinlogError::Key {
                        pos: at.clone(),
                        source: Box::new(source),
                    }
                })?)
            }
            Some(_) => {
                return Err(BinlogError::Read {
                    pos: at.clone(),
                    reason: format!(
                        "key column `{}` holds a JSON value, which cannot be a key",
                        col.name
                    ),
                    transient: false,
                })
            }
            None => match before {
                Some(b) => parts.push(b[i].clone()),
                None => {
                    return Err(BinlogError::MissingKeyColumn {
                        pos: at.clone(),
                        target: spec.target(),
                        column: col.name.clone(),
                    })
                }
            },
        }
    }
    Ok(parts.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_that_carry_rows_zdm_ost_does_not_decode_are_not_understood() {
        use mysql_async::binlog::events::TransactionPayloadEvent;
        use mysql_async::binlog::TransactionPayloadCompressionType;
        // a MySQL 8.0.20+ transaction compressed by binlog_transaction_compression
        let payload = EventData::TransactionPayloadEvent(TransactionPayloadEvent::new(
            3,
            TransactionPayloadCompressionType::ZSTD,
            10,
            vec![1u8, 2, 3],
        ));
        assert!(!understood(&payload));
        assert!(not_understood(&payload).contains("binlog_transaction_compression"));
        assert!(!understood(&EventData::ExecLoadEvent(vec![0u8].into())));
        assert!(understood(&EventData::HeartbeatEvent));
        assert!(
            is_dml("  INSERT INTO t VALUES (1)")
                && is_dml("(WITH x AS (SELECT 1) UPDATE t SET a = 1)")
        );
        assert!(!is_dml("ALTER TABLE t FORCE"));
    }

    #[test]
    fn positions_order_by_file_then_offset_and_show_the_gtid() {
        let a = BinlogPos::new("mariadb-bin.000002", 900);
        let b = BinlogPos::new("mariadb-bin.000003", 4);
        assert!(a < b);
        assert!(BinlogPos::new("mariadb-bin.000003", 5) > b);
        let mut g = a.clone();
        g.gtid = Some("0-1-42".into());
        assert_eq!(g, a);
        assert_eq!(g.to_string(), "mariadb-bin.000002:900 (gtid 0-1-42)");
    }
}
