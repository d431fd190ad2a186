//! `disk`: no server; how long a small write plus fsync takes in a directory.

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;

/// Prints what [`probe_disk`] measured.
pub(crate) fn disk(dir: &std::path::Path, duration: Duration, size: usize) -> anyhow::Result<()> {
    let syncs = probe_disk(dir, duration, size)?;
    let ms = |q: f64| syncs.value_at_quantile(q) as f64 / 1000.0;
    let over = |limit_ms: u64| {
        syncs
            .iter_recorded()
            .filter(|v| v.value_iterated_to() > limit_ms * 1000)
            .map(|v| v.count_at_value())
            .sum::<u64>()
    };
    println!("scenario: disk path={} size={size}", dir.display());
    println!(
        "fsync ms: p50 {:.3} p99 {:.3} p999 {:.3} max {:.1} (n={}); over 10 ms: {}, over 50 ms: {}",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        syncs.max() as f64 / 1000.0,
        syncs.len(),
        over(10),
        over(50),
    );
    Ok(())
}

/// Writes `size` bytes and fsyncs, back to back, for `duration`, over a 2 MiB file written
/// beforehand (overwrites, as SQLite's WAL after it starts over); returns the fsync latencies
/// in µs. The scratch file is removed.
pub(crate) fn probe_disk(
    dir: &std::path::Path,
    duration: Duration,
    size: usize,
) -> anyhow::Result<Histogram<u64>> {
    use std::os::unix::fs::FileExt;
    const SLOTS: u64 = 256;
    let path = dir.join("natter-bench-disk.tmp");
    let file = std::fs::File::create(&path).with_context(|| format!("creating {path:?}"))?;
    let probe = || -> anyhow::Result<Histogram<u64>> {
        let block = vec![0x5a_u8; size];
        for slot in 0..SLOTS {
            file.write_all_at(&block, slot * size as u64)?;
        }
        file.sync_all()?;
        let mut syncs = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let started = Instant::now();
        let mut slot = 0;
        while started.elapsed() < duration {
            file.write_all_at(&block, slot * size as u64)?;
            slot = (slot + 1) % SLOTS;
            let t = Instant::now();
            file.sync_all()?;
            let _ = syncs.record(t.elapsed().as_micros().max(1) as u64);
        }
        Ok(syncs)
    };
    let syncs = probe();
    let _ = std::fs::remove_file(&path);
    syncs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_probe_times_its_fsyncs_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("natter-bench-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let syncs = probe_disk(&dir, Duration::from_millis(200), 4096).unwrap();
        assert!(!syncs.is_empty(), "no fsync was timed");
        assert!(syncs.min() >= 1);
        assert!(!dir.join("natter-bench-disk.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
