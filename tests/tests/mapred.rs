//! MapReduce on a loopback cluster, checked against oracles: the sequential runner of the same
//! app code, and the independent Python reference (`wc-reference.py`) for word count. Outputs
//! are compared after `LC_ALL=C sort`, as the classic lab's test script does.
//!
//! Gates in the lab's style: map and reduce tasks run in parallel; with nothing failing each task
//! runs exactly once; nobody reports the job done before its output is final; with workers
//! killed and stalled and the master restarted mid-job, the output still equals the oracle; map
//! tasks are data-local.

use bytes::Bytes;
use quarry_client::Client;
use quarry_mapred::apps::run_sequential;
use quarry_mapred::worker::write_file;
use quarry_proto::job::*;
use quarry_proto::{FileKind, OpId};
use quarry_tests::{c_sort, corpus, read_whole, run_cli, wait_for, Cluster, Options, ProcCluster};
use std::path::{Path, PathBuf};
use std::time::Duration;

async fn put(client: &Client, path: &str, data: Vec<u8>) {
    let (dir, _) = path.rsplit_once('/').unwrap();
    if !dir.is_empty() {
        client.mkdir_p(dir, 0o755).await.unwrap();
    }
    write_file(client, path, Bytes::from(data)).await.unwrap();
}

/// Upload every file of a local directory to `remote`; returns (remote path, bytes) in name
/// order, as the sequential oracle wants them.
async fn upload_dir(client: &Client, local: &Path, remote: &str) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(local)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut files = Vec::new();
    for p in names {
        let data = std::fs::read(&p).unwrap();
        let path = format!("{remote}/{}", p.file_name().unwrap().to_str().unwrap());
        put(client, &path, data.clone()).await;
        files.push((path, data));
    }
    files
}

async fn submit(
    client: &Client,
    seq: u64,
    app: AppSpec,
    inputs: &[&str],
    output: &str,
    r: u32,
) -> JobId {
    client
        .rpc_master(&SubmitJob {
            op: OpId {
                client: client.client_id(),
                seq: 1_000_000 + seq,
            },
            spec: JobSpec {
                app,
                inputs: inputs.iter().map(|s| s.to_string()).collect(),
                output: output.into(),
                reducers: r,
            },
        })
        .await
        .unwrap()
}

/// What was seen while a job ran.
#[derive(Default, Debug)]
struct Watch {
    max_maps_running: u32,
    max_reduces_running: u32,
}

/// Poll until the job ends. The moment it first reports success, its outputs must be final:
/// every part file present, no temporary directory left.
async fn wait_job(client: &Client, id: JobId) -> (JobStatus, Watch, Vec<u8>) {
    let mut watch = Watch::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let s = client.rpc_master(&GetJob { job: id }).await.unwrap();
        watch.max_maps_running = watch.max_maps_running.max(s.maps.running);
        watch.max_reduces_running = watch.max_reduces_running.max(s.reduces.running);
        match &s.state {
            JobState::Running => {}
            JobState::Failed(why) => panic!("job {id} failed: {why}"),
            JobState::Succeeded => {
                let out = final_output(client, &s).await;
                return (s, watch, out);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} still running: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The job's committed output: exactly `part-00000 … part-(R-1)` in the output directory.
async fn final_output(client: &Client, s: &JobStatus) -> Vec<u8> {
    let dir = client.stat(&s.spec.output).await.unwrap();
    let mut names: Vec<String> = client
        .readdir(dir.inode)
        .await
        .unwrap()
        .into_iter()
        .inspect(|e| assert_eq!(e.kind, FileKind::File, "{} in the output", e.name))
        .map(|e| e.name)
        .collect();
    names.sort();
    let want: Vec<String> = (0..s.spec.reducers)
        .map(|r| format!("part-{r:05}"))
        .collect();
    assert_eq!(
        names, want,
        "the output directory holds exactly the part files"
    );
    assert_eq!(
        s.outputs,
        want.iter()
            .map(|n| format!("{}/{n}", s.spec.output))
            .collect::<Vec<_>>()
    );
    let mut all = Vec::new();
    for p in &s.outputs {
        all.extend(read_whole(client, p).await);
    }
    all
}

/// `wc-reference.py` from the shared bench directory, when present.
fn python_reference(files: &[(String, Vec<u8>)]) -> Option<Vec<u8>> {
    let script = [
        std::env::var_os("QUARRY_BENCH_DIR").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench")),
        Some(PathBuf::from("/work/shared/bench")),
    ]
    .into_iter()
    .flatten()
    .map(|d| d.join("wc-reference.py"))
    .find(|p| p.exists())?;
    let dir = tempfile::tempdir().unwrap();
    let mut args = Vec::new();
    for (i, (_, data)) in files.iter().enumerate() {
        let p = dir.path().join(format!("{i:04}"));
        std::fs::write(&p, data).unwrap();
        args.push(p);
    }
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg("--quiet")
        .args(&args)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_corpus_equals_both_oracles_with_parallel_tasks_run_exactly_once() {
    quarry_tests::init_tracing();
    let Some(corpus) = corpus() else { return };
    // 256 KiB chunks: the 8.8 MB corpus makes ~40 map tasks, many words cross a boundary.
    let mut opts = Options::default().chunk_size(256 << 10);
    opts.task_delay_ms = 150; // long enough for tasks to be seen running side by side
    let cluster = Cluster::start(opts).await;
    let client = cluster.client().await;
    let files = upload_dir(&client, &corpus.join("small"), "/books").await;

    let id = submit(&client, 1, AppSpec::WordCount, &["/books"], "/out/wc", 3).await;
    let (status, watch, output) = wait_job(&client, id).await;
    let got = c_sort(&output);
    let reference = c_sort(&std::fs::read(corpus.join("ref/small.txt")).unwrap());
    assert!(got == reference, "word count differs from ref/small.txt");
    assert!(got == c_sort(&run_sequential(&AppSpec::WordCount, &files)));

    let c = status.counters;
    let maps = status.maps.total as u64;
    assert!(maps >= 30, "{maps} map tasks");
    assert_eq!(
        c.map_attempts, maps,
        "each map task ran exactly once: {c:?}"
    );
    assert_eq!(
        c.reduce_attempts, 3,
        "each reduce task ran exactly once: {c:?}"
    );
    assert_eq!(
        c.failed_attempts + c.backup_attempts + c.lost_workers,
        0,
        "{c:?}"
    );
    let executed: u64 = (0..3)
        .map(|i| cluster.worker(i).executed(TaskKind::Map))
        .sum();
    assert_eq!(executed, maps, "attempts the workers ran");
    assert!(
        watch.max_maps_running >= 2,
        "maps never ran in parallel: {watch:?}"
    );
    assert!(
        watch.max_reduces_running >= 2,
        "reduces never ran in parallel: {watch:?}"
    );
    assert_eq!(
        c.input_bytes,
        files.iter().map(|f| f.1.len() as u64).sum::<u64>()
    );
    assert_eq!(
        c.output_records,
        reference
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64
    );
    assert!(c.data_local_maps * 10 >= maps * 9, "data-local maps: {c:?}");

    // grep and the inverted index, against the sequential runner.
    for (seq, app, out) in [
        (
            2,
            AppSpec::Grep {
                pattern: "LORD".into(),
            },
            "/out/grep",
        ),
        (3, AppSpec::InvertedIndex, "/out/index"),
    ] {
        let id = submit(&client, seq, app.clone(), &["/books/*.txt"], out, 2).await;
        let (_, _, output) = wait_job(&client, id).await;
        assert!(
            c_sort(&output) == c_sort(&run_sequential(&app, &files)),
            "{} output differs from the sequential runner",
            app.name()
        );
    }

    // Bad submissions are errors, not jobs.
    let bad = client
        .rpc_master(&SubmitJob {
            op: OpId {
                client: client.client_id(),
                seq: 99,
            },
            spec: JobSpec {
                app: AppSpec::WordCount,
                inputs: vec!["/books".into()],
                output: "/out/wc".into(), // exists
                reducers: 2,
            },
        })
        .await;
    assert!(bad.is_err(), "{bad:?}");
    let missing = client
        .rpc_master(&SubmitJob {
            op: OpId {
                client: client.client_id(),
                seq: 100,
            },
            spec: JobSpec {
                app: AppSpec::WordCount,
                inputs: vec!["/nope".into()],
                output: "/out/x".into(),
                reducers: 2,
            },
        })
        .await;
    assert!(missing.is_err(), "{missing:?}");
    let jobs = client.rpc_master(&ListJobs {}).await.unwrap();
    assert_eq!(jobs.len(), 3);
    cluster.shutdown().await;
}

/// Text built to break word splitting at chunk boundaries (64 KiB chunks).
fn edge_case_files() -> Vec<(String, Vec<u8>)> {
    const CS: usize = 64 << 10;
    let mut files = Vec::new();
    // 1. A multi-byte letter split by each boundary, at every byte offset.
    let mut a = Vec::new();
    for (k, letter) in ["é", "中", "𐐀", "ʰ"].iter().enumerate() {
        for shift in 0..letter.len() {
            let boundary = (a.len() / CS + 1) * CS;
            a.resize(boundary - shift - 3, b' ');
            a.extend_from_slice(b"ab");
            a.extend_from_slice(letter.as_bytes());
            a.extend_from_slice(format!("cd{k} ").as_bytes());
        }
    }
    files.push(("/edge/split-letters.txt".to_string(), a));
    // 2. A word longer than two chunks, and words that end exactly at a boundary.
    let mut b = b"start ".to_vec();
    b.extend(std::iter::repeat_n(b'x', 2 * CS + 100));
    b.extend_from_slice(b" middle ");
    let boundary = (b.len() / CS + 1) * CS;
    b.resize(boundary - 4, b'.');
    b.extend_from_slice(b"edge tail");
    files.push(("/edge/long-word.txt".to_string(), b));
    // 3. Non-letters of every kind: digits, underscore, apostrophe, combining marks, invalid
    //    UTF-8 (lone continuation bytes, truncated sequences, 0xFF), mixed scripts.
    let pieces: [&[u8]; 14] = [
        b"don't ",
        b"snake_case ",
        b"abc123def ",
        "cafe\u{301} ".as_bytes(),
        "café ".as_bytes(),
        b"bad\xffbyte ",
        b"lone\x80cont ",
        b"trunc\xe4\xb8 ",
        "Ωmega ".as_bytes(),
        "日本語テキスト ".as_bytes(),
        "ǅungla ".as_bytes(),
        b"\xc3(x ",
        "ﬁnal ".as_bytes(),
        b"UPPER upper Upper\n",
    ];
    let mut c = Vec::new();
    let mut i = 0usize;
    while c.len() < 5 * CS + 777 {
        c.extend_from_slice(pieces[i % pieces.len()]);
        i = i.wrapping_mul(31).wrapping_add(7) % 1009;
    }
    files.push(("/edge/mixed.txt".to_string(), c));
    // 4. Tiny and empty files; a file with no trailing separator.
    files.push(("/edge/tiny.txt".to_string(), b"x".to_vec()));
    files.push(("/edge/empty.txt".to_string(), Vec::new()));
    files.push((
        "/edge/no-newline.txt".to_string(),
        "word ω".as_bytes().to_vec(),
    ));
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn words_across_chunk_boundaries_and_odd_bytes_match_the_oracles() {
    quarry_tests::init_tracing();
    let cluster = Cluster::start(Options::default().chunk_size(64 << 10)).await;
    let client = cluster.client().await;
    let files = edge_case_files();
    for (path, data) in &files {
        put(&client, path, data.clone()).await;
    }
    let id = submit(&client, 1, AppSpec::WordCount, &["/edge"], "/out", 4).await;
    let (status, _, output) = wait_job(&client, id).await;
    let got = c_sort(&output);
    assert!(
        got == c_sort(&run_sequential(&AppSpec::WordCount, &files)),
        "differs from the sequential runner"
    );
    match python_reference(&files) {
        Some(reference) => assert!(got == c_sort(&reference), "differs from wc-reference.py"),
        None => assert!(
            !quarry_tests::fuse::under_ci(),
            "wc-reference.py missing under CI"
        ),
    }
    assert!(status.maps.total >= 12, "{:?}", status.maps);
    for app in [
        AppSpec::Grep {
            pattern: "e".into(),
        },
        AppSpec::InvertedIndex,
    ] {
        let out = format!("/out-{}", app.name());
        let id = submit(
            &client,
            2 + app.name().len() as u64,
            app.clone(),
            &["/edge/*"],
            &out,
            3,
        )
        .await;
        let (_, _, output) = wait_job(&client, id).await;
        assert!(
            c_sort(&output) == c_sort(&run_sequential(&app, &files)),
            "{}",
            app.name()
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_tasks_run_where_their_only_replica_is() {
    quarry_tests::init_tracing();
    let mut opts = Options::default().chunk_size(64 << 10);
    opts.replication = 1;
    let cluster = Cluster::start(opts).await;
    let client = cluster.client().await;
    let mut files = Vec::new();
    for i in 0..12 {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|w| format!("w{} ", ["alpha", "beta", "gamma"][(w + i) % 3]).into_bytes())
            .collect();
        let path = format!("/in/f{i:02}");
        put(&client, &path, text.clone()).await;
        files.push((path, text));
    }
    let id = submit(&client, 1, AppSpec::WordCount, &["/in"], "/out", 3).await;
    let (status, _, output) = wait_job(&client, id).await;
    assert!(c_sort(&output) == c_sort(&run_sequential(&AppSpec::WordCount, &files)));
    let c = status.counters;
    let maps = status.maps.total as u64;
    assert!(maps >= 36, "{maps}");
    assert!(
        c.data_local_maps * 10 >= maps * 9,
        "only {} of {maps} map tasks were data-local",
        c.data_local_maps
    );
    cluster.shutdown().await;
}

/// Processes killed with `kill -9`, a process frozen with SIGSTOP, and the master killed and
/// restarted, all while a job runs, through the CLI. The job finishes, equal to the oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_killed_and_stalled_and_a_master_restart_do_not_change_the_output() {
    quarry_tests::init_tracing();
    let Some(corpus) = corpus() else { return };
    let mut opts = Options::default().chunkservers(4).chunk_size(512 << 10);
    opts.task_delay_ms = 300;
    opts.worker_timeout_ms = 2_000;
    opts.heartbeat_timeout_ms = 2_000;
    let mut cluster = ProcCluster::start(opts).await;
    let client = cluster.client().await;
    let files = upload_dir(&client, &corpus.join("small"), "/books").await;
    drop(client);

    let cluster_file = cluster.cluster_file.clone();
    let job = std::thread::spawn(move || {
        run_cli(
            &cluster_file,
            &[
                "job",
                "wordcount",
                "/books",
                "/out",
                "--reducers",
                "4",
                "--wait",
            ],
        )
    });
    let client = cluster.client().await;
    let progress = |want: u32| {
        let client = &client;
        async move {
            let jobs = client.rpc_master(&ListJobs {}).await.ok()?;
            let s = jobs.first()?;
            (s.maps.done >= want).then_some(())
        }
    };
    // Which chunkserver dies and which stalls is drawn at random (the seed is printed).
    let seed: u64 = std::env::var("QUARRY_MR_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let killed = (seed % 4) as usize;
    let frozen = (killed + 1 + (seed / 4 % 3) as usize) % 4;
    eprintln!("fault seed {seed}: kill -9 chunkserver {killed}, SIGSTOP chunkserver {frozen}");
    wait_for("some maps done", Duration::from_secs(120), || progress(3)).await;
    cluster.kill9_chunkserver(killed);
    cluster.freeze_chunkserver(frozen, true);
    // The coordinator must have re-issued work lost with the killed worker (its running attempt
    // or its finished map output) before it is itself killed: with fast maps, 8 can be done
    // within the worker timeout, and a worker restarted before the new master times it out is
    // never lost.
    let loss_seen = || {
        let client = &client;
        async move {
            let jobs = client.rpc_master(&ListJobs {}).await.ok()?;
            let s = jobs.first()?;
            (s.maps.done >= 8 && s.counters.map_attempts > s.maps.total as u64).then_some(())
        }
    };
    wait_for(
        "more maps done, lost work redone",
        Duration::from_secs(120),
        loss_seen,
    )
    .await;
    cluster.freeze_chunkserver(frozen, false);
    cluster.kill9_master();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.restart_master();
    cluster.restart_chunkserver(killed);
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || job.join().unwrap())
        .await
        .unwrap();
    assert!(ok, "quarry job failed: {stderr}");
    assert!(
        String::from_utf8_lossy(&stdout).contains("succeeded"),
        "{}",
        String::from_utf8_lossy(&stdout)
    );

    let client = cluster.client().await;
    let jobs = client.rpc_master(&ListJobs {}).await.unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "the job survived the master restart: {jobs:?}"
    );
    let s = &jobs[0];
    let output = final_output(&client, s).await;
    assert!(c_sort(&output) == c_sort(&std::fs::read(corpus.join("ref/small.txt")).unwrap()));
    assert!(c_sort(&output) == c_sort(&run_sequential(&AppSpec::WordCount, &files)));
    assert!(
        s.counters.map_attempts > s.maps.total as u64,
        "work was redone: {:?}",
        s.counters
    );

    // The other job commands.
    let (ok, out, err) = run_cli(&cluster.cluster_file, &["job", "list"]);
    assert!(ok, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("succeeded"));
    let (ok, out, err) = run_cli(&cluster.cluster_file, &["job", "counters", "1", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["output_records"].as_u64(),
        Some(s.counters.output_records)
    );
    let (ok, out, err) = run_cli(&cluster.cluster_file, &["job", "status", "1"]);
    assert!(ok, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("/out/part-00003"));
}

async fn current_leader(c: &ProcCluster, probe: &Client) -> usize {
    wait_for("a leader", Duration::from_secs(30), || c.leader(probe))
        .await
        .0
}

/// The job coordinator follows Raft leadership: a job submitted to one leader finishes with
/// the right output after leadership moved away (the old leader frozen, so it is deposed while
/// alive) and back to it again; a deposed master's coordinator answers `NotLeader` with the
/// leader's address instead of its stale view, and serves again once it leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_coordinator_hands_off_with_raft_leadership() {
    quarry_tests::init_tracing();
    let Some(corpus) = corpus() else { return };
    let mut opts = Options::default()
        .masters(3)
        .chunkservers(3)
        .chunk_size(512 << 10);
    opts.heartbeat_ms = 100;
    opts.task_delay_ms = 200;
    let mut cluster = ProcCluster::start(opts).await;
    let client = cluster.client().await;
    let files = upload_dir(&client, &corpus.join("small"), "/books").await;
    // Status calls to a frozen master must fail fast.
    let probe = quarry_tests::connect_client_with(
        &cluster.certs,
        &cluster.master_addrs,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let first = current_leader(&cluster, &probe).await;

    let cluster_file = cluster.cluster_file.clone();
    let job = std::thread::spawn(move || {
        run_cli(
            &cluster_file,
            &[
                "job",
                "wordcount",
                "/books",
                "/out",
                "--reducers",
                "3",
                "--wait",
            ],
        )
    });
    let maps_done = |want: u32| {
        let client = &client;
        async move {
            let jobs = client.rpc_master(&ListJobs {}).await.ok()?;
            (jobs.first()?.maps.done >= want).then_some(())
        }
    };
    wait_for("some maps done", Duration::from_secs(120), || maps_done(2)).await;

    // Depose the first leader while it stays alive: freeze it until another master leads.
    cluster.freeze_master(first, true);
    let second = wait_for("a new leader", Duration::from_secs(30), || async {
        cluster
            .leader(&probe)
            .await
            .map(|(i, _)| i)
            .filter(|i| *i != first)
    })
    .await;
    cluster.freeze_master(first, false);
    // Its coordinator notices and sends callers to the leader.
    let first_addr = cluster.master_addrs[first].to_string();
    let second_addr = cluster.master_addrs[second].to_string();
    wait_for(
        "the deposed coordinator to redirect",
        Duration::from_secs(30),
        || async {
            match probe.rpc().call(&first_addr, &ListJobs {}).await {
                Err(quarry_proto::FsError::NotLeader { hint }) => {
                    (hint.as_deref() == Some(second_addr.as_str())).then_some(())
                }
                _ => None,
            }
        },
    )
    .await;
    wait_for(
        "maps done under the new leader",
        Duration::from_secs(120),
        || maps_done(5),
    )
    .await;

    // Move leadership until it is back on the first master (each move freezes the current
    // leader until another one leads).
    let mut moves = 0;
    loop {
        let now = current_leader(&cluster, &probe).await;
        if now == first {
            break;
        }
        moves += 1;
        assert!(moves <= 12, "leadership never came back to master {first}");
        cluster.freeze_master(now, true);
        wait_for("leadership to move", Duration::from_secs(30), || async {
            cluster
                .leader(&probe)
                .await
                .map(|(i, _)| i)
                .filter(|i| *i != now)
        })
        .await;
        cluster.freeze_master(now, false);
    }
    // The first master leads again and its coordinator serves.
    wait_for(
        "the first master's coordinator to serve again",
        Duration::from_secs(30),
        || async { probe.rpc().call(&first_addr, &ListJobs {}).await.ok() },
    )
    .await;

    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || job.join().unwrap())
        .await
        .unwrap();
    assert!(ok, "quarry job failed: {stderr}");
    assert!(
        String::from_utf8_lossy(&stdout).contains("succeeded"),
        "{}",
        String::from_utf8_lossy(&stdout)
    );
    let jobs = probe.rpc().call(&first_addr, &ListJobs {}).await.unwrap();
    assert_eq!(jobs.len(), 1, "one job, across every hand-off: {jobs:?}");
    let output = final_output(&client, &jobs[0]).await;
    assert!(c_sort(&output) == c_sort(&std::fs::read(corpus.join("ref/small.txt")).unwrap()));
    assert!(c_sort(&output) == c_sort(&run_sequential(&AppSpec::WordCount, &files)));
}
