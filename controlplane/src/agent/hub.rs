//! Where flows go once enriched: the buffer of recent flows, the live subscribers of
//! `sluice observe --follow`, and the optional JSON-lines export with size-based rotation.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::flows::{FlowBuffer, FlowFilter, FlowRecord};

/// Rotated export files kept besides the current one (`FILE.1` … `FILE.3`).
pub const EXPORT_KEEP: usize = 3;

/// An append-only JSON-lines file of flows, rotated when it reaches a size.
pub struct FlowExport {
    path: PathBuf,
    max_bytes: u64,
    written: u64,
    file: BufWriter<File>,
}

impl FlowExport {
    /// Opens (appending to) `path`.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<FlowExport> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(FlowExport {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1024),
            written,
            file: BufWriter::new(file),
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends one flow; rotates first when the file is full.
    pub fn write(&mut self, record: &FlowRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.written + line.len() as u64 > self.max_bytes {
            self.file.flush()?;
            for n in (1..EXPORT_KEEP).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.file = BufWriter::new(file);
            self.written = 0;
        }
        self.file.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Writes buffered lines out.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct Inner {
    buffer: FlowBuffer,
    export: Option<FlowExport>,
    export_errors: u64,
}

/// The agent's flow fan-out. Pushing and subscribing happen under one lock, so a follower
/// gets every flow exactly once: the buffered ones, then the live ones.
pub struct FlowHub {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<FlowRecord>>,
}

impl FlowHub {
    /// A hub keeping `capacity` recent flows, exporting to `export` if given.
    pub fn new(capacity: usize, export: Option<FlowExport>) -> FlowHub {
        let (live, _) = broadcast::channel(4096);
        FlowHub {
            inner: Mutex::new(Inner {
                buffer: FlowBuffer::new(capacity),
                export,
                export_errors: 0,
            }),
            live,
        }
    }

    /// Records flows.
    pub fn push_all(&self, records: Vec<FlowRecord>) {
        if records.is_empty() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for record in records {
            if let Some(export) = inner.export.as_mut()
                && export.write(&record).is_err()
            {
                inner.export_errors += 1;
            }
            let record = Arc::new(record);
            // No subscriber is not an error.
            let _ = self.live.send(Arc::clone(&record));
            inner.buffer.push(Arc::unwrap_or_clone(record));
        }
        if let Some(export) = inner.export.as_mut() {
            let _ = export.flush();
        }
    }

    /// Sets the number of flow events lost upstream.
    pub fn set_lost(&self, lost: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.buffer.set_lost(lost);
        }
    }

    /// The last `n` matching flows, and (when `follow`) a subscription to the ones after them.
    pub fn snapshot(
        &self,
        filter: &FlowFilter,
        n: usize,
        follow: bool,
    ) -> (
        Vec<FlowRecord>,
        Option<broadcast::Receiver<Arc<FlowRecord>>>,
    ) {
        let Ok(inner) = self.inner.lock() else {
            return (Vec::new(), None);
        };
        let records = inner.buffer.last(filter, n);
        (records, follow.then(|| self.live.subscribe()))
    }

    /// (seen, evicted, lost) flow counts.
    pub fn counts(&self) -> (u64, u64, u64) {
        self.inner
            .lock()
            .map(|i| i.buffer.counts())
            .unwrap_or_default()
    }

    /// Flows the export could not write.
    pub fn export_errors(&self) -> u64 {
        self.inner.lock().map(|i| i.export_errors).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_rotates_by_size_and_keeps_three_old_files() {
        let dir = std::env::temp_dir().join(format!("sluice-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("flows.jsonl");
        let mut export = FlowExport::open(&path, 1024).expect("open");
        let record = FlowRecord {
            verdict: "FORWARDED".into(),
            ..FlowRecord::default()
        };
        for _ in 0..100 {
            export.write(&record).expect("write");
        }
        export.flush().expect("flush");
        let size = std::fs::metadata(&path).expect("current").len();
        assert!(size <= 1024, "{size}");
        for n in 1..=EXPORT_KEEP {
            let rotated = PathBuf::from(format!("{}.{n}", path.display()));
            assert!(rotated.exists(), "{} missing", rotated.display());
        }
        assert!(!PathBuf::from(format!("{}.4", path.display())).exists());
        let line = std::fs::read_to_string(&path).expect("read");
        let first: FlowRecord =
            serde_json::from_str(line.lines().next().expect("a line")).expect("json");
        assert_eq!(first.verdict, "FORWARDED");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_follower_gets_the_buffered_flows_then_the_live_ones_once() {
        let hub = FlowHub::new(10, None);
        let flow = |port| FlowRecord {
            destination: crate::flows::FlowEndpoint {
                port,
                ..Default::default()
            },
            ..FlowRecord::default()
        };
        hub.push_all(vec![flow(1), flow(2)]);
        let (old, rx) = hub.snapshot(&FlowFilter::default(), 10, true);
        let mut rx = rx.expect("subscribed");
        hub.push_all(vec![flow(3)]);
        assert_eq!(
            old.iter().map(|f| f.destination.port).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(rx.try_recv().expect("live").destination.port, 3);
        assert!(rx.try_recv().is_err());
    }
}
