//! Failpoints for tests: `ZDM_FAILPOINT=name` makes the process stop at that point (until it is
//! killed); `name=MS` pauses there for MS milliseconds once; `name~MS` pauses MS milliseconds
//! every time. Several: comma-separated. A stop or one-time pause is logged as "failpoint NAME
//! reached", which tests wait for.
//!
//! Points: `copy` (after each copied chunk), `copy-uncommitted` (a chunk read through a
//! snapshot, inserted, not committed yet), `copy-slow-read~MS` (the server sleeps MS ms per row
//! a snapshot chunk reads, so its insert runs long after its snapshot was taken), `cut-over-start` (before the cut-over's catch-up),
//! `cut-over-locked` (under the cut-over lock, RENAME queued, before the last keys are applied),
//! `checksum` (copy done, before the checksum starts), `build-indexes` (checksum done, before the
//! deferred secondary indexes are built).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

static HIT: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// The pause configured for `name~MS`, if any (for points that are not a pause in zdm-ost
/// itself but one the server makes).
pub fn every(name: &str) -> Option<u64> {
    let spec = std::env::var("ZDM_FAILPOINT").ok()?;
    spec.split(',').find_map(|part| {
        let (n, ms) = part.split_once('~')?;
        (n.trim() == name).then(|| ms.trim().parse().ok())?
    })
}

pub async fn hit(name: &str) {
    let Ok(spec) = std::env::var("ZDM_FAILPOINT") else {
        return;
    };
    for part in spec.split(',') {
        if let Some((n, ms)) = part.split_once('~') {
            if n.trim() == name {
                let ms = ms.trim().parse::<u64>().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            continue;
        }
        let (n, ms) = match part.split_once('=') {
            Some((n, ms)) => (n.trim(), ms.trim().parse::<u64>().ok()),
            None => (part.trim(), None),
        };
        if n != name {
            continue;
        }
        {
            let mut hit = HIT.lock().unwrap_or_else(|p| p.into_inner());
            if !hit
                .get_or_insert_with(HashSet::new)
                .insert(name.to_string())
            {
                return; // each point fires once
            }
        }
        tracing::warn!("failpoint {name} reached");
        match ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending::<()>().await,
        }
    }
}
