//! Three masters in a Raft group, as `quarry master` child processes (issue #4's acceptance):
//! the leader is killed with `kill -9` again and again under a continuous namespace and data
//! workload (a new leader each time, nothing acknowledged lost, a register history that is
//! linearizable), a leader cut off in a minority acknowledges nothing, and a `kill -9` of every
//! master loses nothing, and masters are added and removed with `quarry masters add/remove`
//! while clients and chunkservers keep working (they learn a new master from the leader hints).

use bytes::Bytes;
use quarry_client::Client;
use quarry_proto::{FsError, InodeId, XattrFlags};
use quarry_tests::linearizability::{check_register, Event, RegOp};
use quarry_tests::{pattern, run_cli, wait_for, Options, ProcCluster, TestClient};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn opts() -> Options {
    Options {
        masters: 3,
        heartbeat_ms: 100,
        ..Options::default()
    }
}

/// A client of `masters` with a short RPC timeout (a call to a dead master fails fast) and a
/// long retry deadline (an operation outlives any failover).
async fn client_of(c: &ProcCluster, masters: &[SocketAddr], retry: Duration) -> TestClient {
    quarry_tests::connect_client_with(&c.certs, masters, Duration::from_secs(2), retry).await
}

/// Wait until a leader other than `old` (index) is up, and return (index, term).
async fn new_leader(c: &ProcCluster, client: &Client, old: Option<usize>) -> (usize, u64) {
    wait_for("a new leader", Duration::from_secs(20), || async {
        c.leader(client).await.filter(|(i, _)| Some(*i) != old)
    })
    .await
}

/// Wait until every running master has applied at least `index`.
async fn caught_up(c: &ProcCluster, client: &Client, index: u64) {
    wait_for("masters caught up", Duration::from_secs(30), || async {
        let infos = c.master_infos(client).await;
        infos
            .iter()
            .enumerate()
            .all(|(i, m)| !c.master_running(i) || m.as_ref().is_some_and(|m| m.log_index >= index))
            .then_some(())
    })
    .await
}

/// What one workload worker knows was acknowledged: name → file contents seed.
type Model = BTreeMap<String, u64>;

/// create f{n} (with data) → rename to g{n} → unlink g{n-2}, until `stop`.
async fn worker(
    client: TestClient,
    dir: InodeId,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    model: Arc<Mutex<Model>>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let mut n = 0u64;
    let mut uncertain = false;
    while !stop.load(Ordering::SeqCst) && !uncertain {
        let f = format!("f{n}");
        let g = format!("g{n}");
        let step = async {
            let attr = client.create(dir, &f, 0o644, 0, 0, true).await?;
            model.lock().unwrap().insert(f.clone(), u64::MAX);
            acked.fetch_add(1, Ordering::SeqCst);
            client
                .write(attr.inode, 0, Bytes::from(pattern(n, 300)))
                .await?;
            model.lock().unwrap().insert(f.clone(), n);
            acked.fetch_add(1, Ordering::SeqCst);
            client.rename(dir, &f, dir, &g).await?;
            {
                let mut m = model.lock().unwrap();
                m.remove(&f);
                m.insert(g.clone(), n);
            }
            acked.fetch_add(1, Ordering::SeqCst);
            if n >= 2 {
                let old = format!("g{}", n - 2);
                client.unlink(dir, &old).await?;
                model.lock().unwrap().remove(&old);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<(), FsError>(())
        };
        if let Err(e) = step.await {
            // Not acknowledged: its outcome is unknown, so this worker stops here (what it
            // acknowledged before is still checked).
            errors.lock().unwrap().push(format!("step {n}: {e}"));
            uncertain = true;
        }
        n += 1;
    }
}

/// Register workload: set or get one extended attribute of one file, recording the history.
async fn register_client(
    client: TestClient,
    inode: InodeId,
    id: u64,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Event>>>,
) {
    let mut k = 0u64;
    while !stop.load(Ordering::SeqCst) && k < 120 {
        k += 1;
        let call = Instant::now();
        if (k + id).is_multiple_of(2) {
            let v = id * 1_000_000 + k;
            let r = client
                .setxattr(inode, "user.reg", &v.to_be_bytes(), XattrFlags::Either)
                .await;
            history.lock().unwrap().push(Event {
                op: RegOp::Write(v),
                call,
                ret: r.is_ok().then(Instant::now),
            });
        } else {
            let r = client.getxattr(inode, "user.reg").await;
            let ret = Instant::now();
            let value = match r {
                Ok(b) => Some(u64::from_be_bytes(b.try_into().unwrap())),
                Err(FsError::NoData) => None,
                Err(_) => continue, // a failed read says nothing
            };
            history.lock().unwrap().push(Event {
                op: RegOp::Read(value),
                call,
                ret: Some(ret),
            });
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill9_twenty_times_under_load() {
    quarry_tests::init_tracing();
    let mut c = ProcCluster::start(opts()).await;
    let all = c.master_addrs.clone();
    let admin = client_of(&c, &all, Duration::from_secs(60)).await;
    let reg = admin
        .mkdir(InodeId::ROOT, "reg", 0o755, 0, 0)
        .await
        .unwrap();
    let reg_file = admin
        .create(reg.inode, "r", 0o644, 0, 0, true)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut models = Vec::new();
    let mut tasks = Vec::new();
    for w in 0..2 {
        let dir = admin
            .mkdir(InodeId::ROOT, &format!("w{w}"), 0o755, 0, 0)
            .await
            .unwrap();
        let model = Arc::new(Mutex::new(Model::new()));
        models.push((dir.inode, model.clone()));
        tasks.push(tokio::spawn(worker(
            client_of(&c, &all, Duration::from_secs(60)).await,
            dir.inode,
            stop.clone(),
            acked.clone(),
            model,
            errors.clone(),
        )));
    }
    let history = Arc::new(Mutex::new(Vec::new()));
    let mut reg_tasks = Vec::new();
    for id in 1..=3 {
        reg_tasks.push(tokio::spawn(register_client(
            client_of(&c, &all, Duration::from_secs(60)).await,
            reg_file.inode,
            id,
            stop.clone(),
            history.clone(),
        )));
    }

    let mut failovers = Vec::new();
    for round in 0..20 {
        // The workload runs throughout; a kill lands wherever it is (after a failover its
        // writes wait for the chunkservers to find the new leader, and for leases).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (leader, term) = new_leader(&c, &admin, None).await;
        let applied = c.master_infos(&admin).await[leader]
            .as_ref()
            .map(|m| m.commit_index)
            .unwrap_or(0);
        c.kill9_master_i(leader);
        let killed = Instant::now();
        let (next, next_term) = new_leader(&c, &admin, Some(leader)).await;
        let took = killed.elapsed();
        assert!(next_term > term);
        assert!(
            took < Duration::from_secs(5),
            "round {round}: failover took {took:?}"
        );
        failovers.push(took);
        eprintln!(
            "round {round}: master {} → {} in {took:?}",
            leader + 1,
            next + 1
        );
        c.restart_master_i(leader);
        // The restarted master must be back (caught up) before the next leader dies, or the
        // next kill would leave no majority.
        caught_up(&c, &admin, applied).await;
    }
    stop.store(true, Ordering::SeqCst);
    eprintln!("stopping the workload");
    // A worker may be inside an operation that is still retrying; what it did not see
    // acknowledged is not in its model, so stopping it is safe for the checks below.
    let mut stuck = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for t in tasks.into_iter().chain(reg_tasks) {
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            stuck += 1;
        }
    }
    eprintln!("workload stopped ({stuck} tasks still retrying after 15 s)");
    assert!(
        acked.load(Ordering::SeqCst) >= 20,
        "the workload made no progress"
    );
    failovers.sort();
    let median = failovers[failovers.len() / 2];
    eprintln!(
        "failover: median {median:?}, min {:?}, max {:?}; {} operations acknowledged",
        failovers[0],
        failovers[failovers.len() - 1],
        acked.load(Ordering::SeqCst)
    );
    let errors = errors.lock().unwrap().clone();
    eprintln!("unacknowledged steps: {errors:?}");
    assert!(errors.len() <= 1, "too many failed operations: {errors:?}");

    // Nothing acknowledged is lost: each directory holds exactly what its worker was told,
    // with the data it wrote (a name whose last step failed may or may not be there).
    let check = client_of(&c, &all, Duration::from_secs(60)).await;
    for (dir, model) in &models {
        let model = model.lock().unwrap().clone();
        let listed: Vec<String> = check
            .readdir(*dir)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        for (name, seed) in &model {
            assert!(listed.contains(name), "{name} acknowledged but missing");
            if *seed != u64::MAX {
                let attr = check.lookup(*dir, name).await.unwrap();
                let data = check.read(attr.inode, 0, 300, attr.size).await.unwrap();
                assert_eq!(&data[..], &pattern(*seed, 300)[..], "{name}");
            }
        }
        assert!(
            listed.len() <= model.len() + 2,
            "unexpected names: {listed:?} vs {model:?}"
        );
    }

    eprintln!("namespace checked");
    let history = history.lock().unwrap().clone();
    let started = Instant::now();
    assert!(
        check_register(&history),
        "register history of {} operations is not linearizable",
        history.len()
    );
    eprintln!(
        "register history of {} operations linearizable (checked in {:?})",
        history.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_in_a_minority_acknowledges_nothing() {
    let mut c = ProcCluster::start(opts()).await;
    let all = c.master_addrs.clone();
    let admin = client_of(&c, &all, Duration::from_secs(30)).await;
    admin
        .mkdir(InodeId::ROOT, "before", 0o755, 0, 0)
        .await
        .unwrap();
    let (leader, _) = new_leader(&c, &admin, None).await;
    // Cut the leader off: the two other masters stop (SIGSTOP). The leader keeps running and
    // answering clients, but no quorum answers it.
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &i in &others {
        c.freeze_master(i, true);
    }
    let pinned = client_of(&c, &[all[leader]], Duration::from_secs(3)).await;
    let mut acknowledged = Vec::new();
    for k in 0..5 {
        let name = format!("cut{k}");
        if pinned
            .mkdir(InodeId::ROOT, &name, 0o755, 0, 0)
            .await
            .is_ok()
        {
            acknowledged.push(name.clone());
        }
        if pinned.lookup(InodeId::ROOT, "before").await.is_ok() {
            acknowledged.push(format!("read {k}"));
        }
    }
    assert!(
        acknowledged.is_empty(),
        "a leader without a quorum acknowledged {acknowledged:?}"
    );
    // Heal: a leader emerges again and the attempted names were never acknowledged; new
    // work proceeds.
    for &i in &others {
        c.freeze_master(i, false);
    }
    new_leader(&c, &admin, None).await;
    admin
        .mkdir(InodeId::ROOT, "after", 0o755, 0, 0)
        .await
        .unwrap();
    admin.lookup(InodeId::ROOT, "before").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_every_master_keeps_the_namespace() {
    let mut c = ProcCluster::start(opts()).await;
    let all = c.master_addrs.clone();
    let client = client_of(&c, &all, Duration::from_secs(60)).await;
    let dir = client
        .mkdir(InodeId::ROOT, "keep", 0o755, 0, 0)
        .await
        .unwrap();
    write_files(&client, dir.inode, 0, 20).await;
    client
        .rename(dir.inode, "f0", dir.inode, "renamed")
        .await
        .unwrap();
    client.unlink(dir.inode, "f1").await.unwrap();
    c.kill9_master();
    c.restart_master();
    let client = client_of(&c, &all, Duration::from_secs(60)).await;
    new_leader(&c, &client, None).await;
    let names: Vec<String> = client
        .readdir(dir.inode)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let mut want: Vec<String> = (2..20).map(|k| format!("f{k}")).collect();
    want.push("renamed".into());
    want.sort();
    assert_eq!(names, want);
    // The data is readable through the new leader (chunk locations come back with the
    // chunkservers' heartbeats).
    for k in 2..20u64 {
        let attr = client.lookup(dir.inode, &format!("f{k}")).await.unwrap();
        let data = client.read(attr.inode, 0, 1000, attr.size).await.unwrap();
        assert_eq!(&data[..], &pattern(k, 1000)[..]);
    }
}

/// Create `n` files `f{from}..` in `dir`, each holding 1000 bytes of `pattern(k)`.
async fn write_files(client: &Client, dir: InodeId, from: u64, n: u64) {
    for k in from..from + n {
        let f = client
            .create(dir, &format!("f{k}"), 0o644, 0, 0, true)
            .await
            .unwrap();
        client
            .write(f.inode, 0, Bytes::from(pattern(k, 1000)))
            .await
            .unwrap();
    }
}

async fn check_files(client: &Client, dir: InodeId, upto: u64) {
    for k in 0..upto {
        let attr = client.lookup(dir, &format!("f{k}")).await.unwrap();
        let data = client.read(attr.inode, 0, 1000, attr.size).await.unwrap();
        assert_eq!(&data[..], &pattern(k, 1000)[..], "f{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_are_added_and_removed_with_the_cli() {
    let mut c = ProcCluster::start(opts()).await;
    let first_three = c.master_addrs.clone();
    // This client and the chunkservers were configured with the first three masters only.
    let client = client_of(&c, &first_three, Duration::from_secs(60)).await;
    let dir = client
        .mkdir(InodeId::ROOT, "m", 0o755, 0, 0)
        .await
        .unwrap()
        .inode;
    write_files(&client, dir, 0, 10).await;

    // A fourth master joins and catches up (a snapshot or the log).
    let four = c.spawn_joining_master();
    let addr4 = c.master_addrs[four].to_string();
    let (ok, out, err) = run_cli(&c.cluster_file, &["masters", "add", "4", &addr4]);
    assert!(ok, "masters add: {err}");
    assert!(String::from_utf8_lossy(&out).contains("master 4 added"));
    let (leader, _) = new_leader(&c, &client, None).await;
    let target = c.master_infos(&client).await[leader]
        .as_ref()
        .unwrap()
        .log_index;
    wait_for(
        "the new master to catch up",
        Duration::from_secs(30),
        || async {
            let m = client.master_info(&addr4).await.ok()?;
            (m.role == "follower" && m.log_index >= target).then_some(())
        },
    )
    .await;
    let (ok, out, err) = run_cli(&c.cluster_file, &["status"]);
    assert!(ok, "status: {err}");
    assert!(
        String::from_utf8_lossy(&out).contains(&addr4),
        "status lists it"
    );

    // Remove the leader itself; the other three elect one and go on.
    let (ok, _, err) = run_cli(
        &c.cluster_file,
        &["masters", "remove", &(leader + 1).to_string()],
    );
    assert!(ok, "masters remove: {err}");
    let (second, _) = new_leader(&c, &client, Some(leader)).await;
    c.kill9_master_i(leader);
    write_files(&client, dir, 10, 10).await;

    // The group is {the two others, master 4}: it survives one more failure.
    c.kill9_master_i(second);
    let (third, _) = new_leader(&c, &client, Some(second)).await;
    assert!(third != leader);
    write_files(&client, dir, 20, 10).await;
    check_files(&client, dir, 30).await;
    // A client that knows only a follower learns the leader from its NotLeader hint, even a
    // leader it was not configured with (as the chunkservers do in their heartbeat loop).
    c.restart_master_i(second);
    let follower = (0..c.master_addrs.len())
        .find(|&i| i != third && i != leader && c.master_running(i))
        .unwrap();
    let only_follower = client_of(&c, &[c.master_addrs[follower]], Duration::from_secs(30)).await;
    only_follower
        .mkdir(dir, "via-hint", 0o755, 0, 0)
        .await
        .unwrap();
    check_files(&only_follower, dir, 30).await;
}

/// A new client asks every master at once who leads, so a frozen master listed first costs it
/// nothing: before, each fresh `quarry` command first waited out the QUIC connect timeout
/// (10 s) on it — or the RPC timeout (30 s, the CLI's default) on a master that accepts the
/// connection but cannot answer — before trying the next master (10.2 s in this test then;
/// ~0.1 s now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_does_not_wait_on_a_frozen_first_master() {
    let mut c = ProcCluster::start(opts()).await;
    let all = c.master_addrs.clone();
    let admin = client_of(&c, &all, Duration::from_secs(30)).await;
    let (leader, _) = new_leader(&c, &admin, None).await;
    let frozen = (0..3).find(|i| *i != leader).unwrap();
    c.freeze_master(frozen, true);
    let mut listed = vec![all[frozen]];
    listed.extend((0..3).filter(|i| *i != frozen).map(|i| all[i]));
    let started = Instant::now();
    let fresh = quarry_tests::connect_client_with(
        &c.certs,
        &listed,
        Duration::from_secs(30),
        Duration::from_secs(60),
    )
    .await;
    fresh
        .mkdir(InodeId::ROOT, "made", 0o755, 0, 0)
        .await
        .unwrap();
    let took = started.elapsed();
    eprintln!("connect + mkdir with the first listed master frozen: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: the client waited on the frozen master"
    );
    c.freeze_master(frozen, false);
    admin.lookup(InodeId::ROOT, "made").await.unwrap();
}
