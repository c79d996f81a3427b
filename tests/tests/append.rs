//! Exactly-once record append on a loopback cluster: eight appenders through the client library
//! while commit replies are lost (fault injection) and a chunkserver dies, and four shell
//! processes appending with `>>` through two FUSE mounts. Every record must be present exactly
//! once and whole, where `append` said it landed, and every replica of every chunk must hold
//! the same bytes once re-replication is done.

use quarry_proto::{FsError, InodeId};
use quarry_tests::fuse::{fuse_available, runtime, MountGuard};
use quarry_tests::*;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WRITERS: u32 = 8;
const RECORDS: u32 = 1000;

/// A record size between 20 bytes and a quarter of the 1 MiB chunk (GFS's bound on a record
/// append), log-uniform: most small, some large enough that a chunk's end is padded often.
/// About 28 KB on average, so the test writes ~0.7 GB with three replicas: CI machines may
/// have little disk to spare.
fn record_len(rng: &mut rand::rngs::StdRng) -> usize {
    let exp: f64 = rng.random_range(4.33..18.0);
    (2f64.powf(exp) as usize).clamp(20, 1 << 18)
}

/// Every chunk of `inode` has `want` live replicas, and all of them serve the same bytes.
async fn replicas_agree(client: &quarry_client::Client, inode: InodeId, want: usize) {
    let cs = client.chunk_size();
    for c in client.chunks(inode).await.unwrap() {
        assert_eq!(
            c.replicas.len(),
            want,
            "chunk {}: {:?}",
            c.index,
            c.replicas
        );
        let mut first: Option<bytes::Bytes> = None;
        for r in &c.replicas {
            let got = read_replica(client, &r.addr, c.handle, c.version, cs)
                .await
                .unwrap_or_else(|e| panic!("chunk {} on {}: {e}", c.index, r.addr));
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    *f == got,
                    "chunk {} differs between replicas ({} vs {} bytes)",
                    c.index,
                    f.len(),
                    got.len()
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_appenders_land_each_record_once_through_lost_replies_and_a_dead_server() {
    init_tracing();
    let chunk = 1u64 << 20;
    let mut opts = Options::default().chunk_size(chunk).chunkservers(4);
    opts.lose_commit_replies_per_mille = 30;
    let mut cluster = Cluster::start(opts).await;
    let setup = cluster.client().await;
    let log = setup
        .create(InodeId::ROOT, "log", 0o644, 0, 0, true)
        .await
        .unwrap()
        .inode;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = cluster.client().await;
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0xA99E_0D00 + w as u64);
            let mut placed = Vec::with_capacity(RECORDS as usize);
            for seq in 0..RECORDS {
                let len = record_len(&mut rng) - 20;
                let rec = record(w, seq, len);
                let at = client
                    .append(log, bytes::Bytes::from(rec))
                    .await
                    .unwrap_or_else(|e| panic!("writer {w} record {seq}: {e}"));
                placed.push((seq, at));
                done.fetch_add(1, Ordering::Relaxed);
            }
            drop(client);
            placed
        }));
    }
    // A quarter of the way in, one chunkserver stops answering for good.
    let total = u64::from(WRITERS * RECORDS);
    wait_for("a quarter of the appends", Duration::from_secs(300), || {
        let n = done.load(Ordering::Relaxed);
        async move { (n >= total / 4).then_some(()) }
    })
    .await;
    let lost_before_stop: u64 = (0..4).map(|i| cluster.chunkserver(i).lost_replies()).sum();
    cluster.stop_chunkserver(3).await;
    let mut returned: HashMap<(u32, u32), u64> = HashMap::new();
    for (w, t) in tasks.into_iter().enumerate() {
        for (seq, at) in t.await.unwrap() {
            returned.insert((w as u32, seq), at);
        }
    }
    let lost: u64 = lost_before_stop
        + (0..3)
            .map(|i| cluster.chunkserver(i).lost_replies())
            .sum::<u64>();
    assert!(lost > 0, "the fault injection lost no reply");

    let data = read_whole(&setup, "/log").await;
    let mut seen: HashMap<(u32, u32), usize> = HashMap::new();
    let mut offsets: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
    let mut pos = 0usize;
    let cs = chunk as usize;
    // Walk the file: records, and zero padding up to a chunk's end where one did not fit.
    while pos < data.len() {
        if data[pos..].starts_with(b"QREC") {
            let h = &data[pos..pos + 20];
            let field = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
            let (key, len, crc) = ((field(4), field(8)), field(12) as usize, field(16));
            let payload = &data[pos + 20..pos + 20 + len];
            assert_eq!(crc32c::crc32c(payload), crc, "record {key:?} is torn");
            *seen.entry(key).or_insert(0) += 1;
            offsets.entry(key).or_default().push(pos as u64);
            pos += 20 + len;
        } else {
            let end = ((pos / cs + 1) * cs).min(data.len());
            assert!(
                data[pos..end].iter().all(|&b| b == 0),
                "garbage at offset {pos}"
            );
            pos = end;
        }
    }
    let dups: Vec<_> = offsets
        .iter()
        .filter(|(_, at)| at.len() != 1)
        .map(|(k, at)| (k, at, returned.get(k)))
        .collect();
    assert!(
        dups.is_empty(),
        "records present more than once (record, offsets, offset append returned): {dups:?}"
    );
    assert_eq!(seen.len() as u64, total, "every record present");
    for (key, at) in &returned {
        assert_eq!(
            offsets.get(key).map(|v| v[0]),
            Some(*at),
            "record {key:?} is where append said"
        );
    }
    eprintln!(
        "{total} records, {} bytes, {lost} replies lost by fault injection",
        data.len()
    );
    // Re-replication brings every chunk back to three replicas on the three live servers,
    // and no replica differs from another.
    wait_for("every chunk healthy", Duration::from_secs(120), || async {
        let r = fsck(&setup, "/").await.ok()?;
        (r.status() == "HEALTHY" && r.healthy == r.chunks).then_some(())
    })
    .await;
    replicas_agree(&setup, log, 3).await;
    drop(setup);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_a_chunk_is_refused_and_an_empty_one_changes_nothing() {
    let cluster = Cluster::start(Options::default().chunk_size(1 << 20)).await;
    let c = cluster.client().await;
    let f = c
        .create(InodeId::ROOT, "f", 0o644, 0, 0, true)
        .await
        .unwrap()
        .inode;
    let err = c
        .append(f, bytes::Bytes::from(vec![1u8; (1 << 20) + 1]))
        .await
        .unwrap_err();
    assert!(matches!(err, FsError::InvalidArgument(_)), "{err:?}");
    assert_eq!(c.append(f, bytes::Bytes::new()).await.unwrap(), 0);
    assert_eq!(
        c.append(f, bytes::Bytes::from_static(b"abc"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(c.getattr(f).await.unwrap().size, 3);
    drop(c);
    cluster.shutdown().await;
}

/// `echo ... >> log` from four shell processes on two mounts of one cluster: every line once,
/// whole, nothing else in the file.
#[test]
fn shell_appends_from_two_mounts_keep_every_line_once() {
    if !fuse_available() {
        return;
    }
    init_tracing();
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(Options::default().chunk_size(4 << 20)));
    let a = MountGuard::new(&rt, &cluster);
    let b = MountGuard::new(&rt, &cluster);
    std::fs::write(a.path("log"), b"").unwrap();
    const LINES: u32 = 200;
    let procs: Vec<_> = (0..4)
        .map(|w| {
            let dir = if w % 2 == 0 { &a.dir } else { &b.dir };
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "i=0; while [ $i -lt {LINES} ]; do echo \"writer {w} line $i of a shell append\" >> log || exit 1; i=$((i+1)); done"
                ))
                .current_dir(dir)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut p in procs {
        assert!(p.wait().unwrap().success(), "an appender failed");
    }
    let text = std::fs::read(a.path("log")).unwrap();
    assert_eq!(
        text,
        std::fs::read(b.path("log")).unwrap(),
        "both mounts agree"
    );
    assert!(!text.contains(&0), "no padding or holes");
    let mut lines: Vec<&[u8]> = text.split(|&c| c == b'\n').collect();
    assert_eq!(lines.pop(), Some(&b""[..]), "ends with a whole line");
    let mut want: Vec<Vec<u8>> = (0..4)
        .flat_map(|w| {
            (0..LINES).map(move |i| format!("writer {w} line {i} of a shell append").into_bytes())
        })
        .collect();
    want.sort();
    let mut got: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
    got.sort();
    assert_eq!(got.len(), want.len(), "line count");
    if got != want {
        let bad: Vec<String> = got
            .iter()
            .filter(|l| want.binary_search(l).is_err())
            .take(10)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        panic!("not every line exactly once; unexpected lines: {bad:?}");
    }
    // Within each writer the lines are in order.
    for w in 0..4 {
        let prefix = format!("writer {w} line ");
        let order: Vec<u32> = lines
            .iter()
            .filter_map(|l| std::str::from_utf8(l).ok()?.strip_prefix(&prefix))
            .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(order, (0..LINES).collect::<Vec<_>>(), "writer {w} in order");
    }
    drop(a);
    drop(b);
    rt.block_on(cluster.shutdown());
}
