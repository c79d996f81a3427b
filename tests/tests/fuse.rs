//! The FUSE mount driven by ordinary shell tools: a harness cluster mounted in this process
//! (`quarry_fs::mount`) at a temporary directory, then `std::fs` and `sh -c` inside it.
//!
//! Each test owns a tokio runtime that serves the cluster and the FUSE requests; the test body
//! runs on the test thread, outside the runtime, because it blocks in system calls that the
//! runtime must answer. Mounts are unmounted by a guard's `Drop`, and waits are on observable
//! state (`/proc/mounts`), not sleeps. Without `/dev/fuse` the tests are skipped, except under
//! CI (`CI=true`), where that is a failure.

use quarry_tests::fuse::{fuse_available, have_command, runtime, wait_until, MountGuard};
use quarry_tests::{pattern, sha256, Cluster, Options};
use std::path::Path;
use std::time::Duration;

/// Small chunks so that files cross chunk boundaries.
fn options() -> Options {
    Options::default().chunk_size(4 << 20)
}

#[test]
fn shell_tools_work_in_a_mount() {
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(options()));
    let m = MountGuard::new(&rt, &cluster);

    // create / write / read / append
    std::fs::write(m.path("hello.txt"), b"hello\n").unwrap();
    assert_eq!(std::fs::read(m.path("hello.txt")).unwrap(), b"hello\n");
    m.sh("echo world >> hello.txt && echo again >> hello.txt");
    assert_eq!(m.sh("cat hello.txt"), "hello\nworld\nagain\n");
    assert_eq!(std::fs::metadata(m.path("hello.txt")).unwrap().len(), 18);

    // mkdir -p, ls, mv across directories
    m.sh("mkdir -p a/b/c d && echo x > a/b/c/file && mv a/b/c/file d/moved");
    assert_eq!(m.sh("ls a/b/c"), "");
    assert_eq!(m.sh("ls d"), "moved\n");
    assert_eq!(m.sh("cat d/moved"), "x\n");
    assert_eq!(m.sh("ls -1 | sort"), "a\nd\nhello.txt\n");
    assert_eq!(
        std::fs::read_dir(m.path("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<Vec<_>>(),
        vec!["c"]
    );
    m.sh("mv d a/b/c/ && test -f a/b/c/d/moved");

    // errors are errnos
    assert_eq!(
        std::fs::read(m.path("nope")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(
        std::fs::create_dir(m.path("a")).unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
    let e = std::fs::remove_dir(m.path("a")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_enotempty()), "{e}");

    // cp -r a local tree in and out, and compare
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    for (i, name) in ["one", "sub/two", "sub/deeper/three", "sub/empty"]
        .iter()
        .enumerate()
    {
        std::fs::write(src.join(name), pattern(i as u64, i * 70_000)).unwrap();
    }
    let out = local.path().join("out");
    m.sh(&format!(
        "cp -r {} tree && cp -r tree {} && diff -r {} {}",
        src.display(),
        out.display(),
        src.display(),
        out.display()
    ));

    // tar c and tar x inside the mount
    m.sh("tar cf tree.tar tree && mkdir unpacked && tar xf tree.tar -C unpacked");
    m.sh("diff -r tree unpacked/tree");

    // sed -i (write a temp file, rename over the original)
    m.sh("printf 'alpha\\nbeta\\n' > s.txt && sed -i 's/beta/gamma/' s.txt");
    assert_eq!(m.sh("cat s.txt"), "alpha\ngamma\n");

    // rm -rf
    m.sh("rm -rf tree unpacked a tree.tar");
    assert_eq!(m.sh("ls -1 | sort"), "hello.txt\ns.txt\n");

    // statfs
    m.sh("df -P . > /dev/null");

    drop(m);
    rt.block_on(cluster.shutdown());
}

fn libc_enotempty() -> i32 {
    39 // ENOTEMPTY on Linux
}

#[test]
fn large_files_truncate_and_fsync() {
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(options()));
    let m = MountGuard::new(&rt, &cluster);

    // 20 MiB crosses several 4 MiB chunks and several write-back flushes.
    let data = pattern(42, 20 << 20);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("big");
    std::fs::write(&src, &data).unwrap();
    m.sh(&format!("cp {} big", src.display()));
    assert_eq!(std::fs::metadata(m.path("big")).unwrap().len(), 20 << 20);
    let back = std::fs::read(m.path("big")).unwrap();
    assert_eq!(sha256(&back), sha256(&data));
    let sum = m.sh("sha256sum big");
    assert!(sum.starts_with(&sha256(&data)), "{sum}");

    // Another client sees the whole file after close.
    let client = rt.block_on(cluster.client());
    let attr = rt.block_on(client.stat("/big")).unwrap();
    assert_eq!(attr.size, 20 << 20);

    // truncate (path) and ftruncate (fd), shrinking and extending.
    m.sh("truncate -s 5000000 big");
    assert_eq!(std::fs::metadata(m.path("big")).unwrap().len(), 5_000_000);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("big"))
        .unwrap();
    f.set_len(6_000_000).unwrap();
    drop(f);
    let back = std::fs::read(m.path("big")).unwrap();
    assert_eq!(back.len(), 6_000_000);
    assert_eq!(&back[..5_000_000], &data[..5_000_000]);
    assert!(back[5_000_000..].iter().all(|b| *b == 0));

    // fsync: buffered data reaches the master before close.
    use std::io::Write;
    let mut f = std::fs::File::create(m.path("synced")).unwrap();
    f.write_all(&data[..3 << 20]).unwrap();
    // Before fsync the size seen through the mount includes buffered data.
    assert_eq!(f.metadata().unwrap().len(), 3 << 20);
    f.sync_all().unwrap();
    let attr = rt.block_on(client.stat("/synced")).unwrap();
    assert_eq!(attr.size, 3 << 20);
    // Random-offset writes through one handle, then read back.
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(b"patched").unwrap();
    drop(f);
    let back = std::fs::read(m.path("synced")).unwrap();
    assert_eq!(&back[100..107], b"patched");
    assert_eq!(&back[..100], &data[..100]);
    assert_eq!(&back[107..], &data[107..3 << 20]);

    drop(client);
    drop(m);
    rt.block_on(cluster.shutdown());
}

/// Write-back pushes run in the background, several per file: rewrites that land on ranges
/// still being pushed, reads through the same handle in between, and a final close must give
/// exactly what a local file gives for the same writes.
#[test]
fn rewrites_over_pushes_in_flight_keep_the_last_write() {
    if !fuse_available() {
        return;
    }
    use rand::{Rng, SeedableRng};
    use std::io::{Read, Seek, SeekFrom, Write};
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(options()));
    let m = MountGuard::new(&rt, &cluster);
    let len = 40usize << 20;
    let mut model = pattern(7, len);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("rewritten"))
        .unwrap();
    // Sequential 1 MiB writes: several 8 MiB pushes in flight at once.
    for block in model.chunks(1 << 20) {
        f.write_all(block).unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED_F00D);
    for round in 0..60u64 {
        // Mostly backwards jumps onto data whose push may still be in flight; some of them
        // sequential runs long enough to start new pushes.
        let at = rng.random_range(0..len - 1);
        let n = rng.random_range(1..=(3usize << 20)).min(len - at);
        let data = pattern(1000 + round, n);
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(&data).unwrap();
        model[at..at + n].copy_from_slice(&data);
        if round % 10 == 9 {
            // A read through the same handle sees every write before it.
            let at = rng.random_range(0..len - 4096);
            let mut got = vec![0u8; 4096];
            f.seek(SeekFrom::Start(at as u64)).unwrap();
            f.read_exact(&mut got).unwrap();
            assert!(
                got == model[at..at + 4096],
                "round {round}: read at {at} differs"
            );
        }
    }
    f.sync_all().unwrap();
    drop(f);
    let back = std::fs::read(m.path("rewritten")).unwrap();
    assert_eq!(back.len(), len);
    if let Some(i) = (0..len).find(|&i| back[i] != model[i]) {
        panic!("the file differs from the writes at offset {i}");
    }
    drop(m);
    rt.block_on(cluster.shutdown());
}

#[test]
fn two_mounts_see_close_to_open() {
    if !fuse_available() {
        return;
    }
    quarry_tests::init_tracing();
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(options()));
    let a = MountGuard::new(&rt, &cluster);
    let b = MountGuard::new(&rt, &cluster);

    let data = pattern(7, 5 << 20);
    {
        // Not std::fs::write: it ignores errors of close(2), where a failed push would show.
        use std::io::Write;
        let mut f = std::fs::File::create(a.path("shared")).unwrap();
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        f.sync_all().expect("fsync on A");
    }
    // Closed on A: B opens it afterwards and reads it whole.
    let back = std::fs::read(b.path("shared")).unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256(&back), sha256(&data));

    // Appends on B are seen by a later open on A (after the attribute TTL at most).
    b.sh("echo tail >> shared");
    let want = data.len() as u64 + 5;
    wait_until("A to see B's append", Duration::from_secs(5), || {
        std::fs::metadata(a.path("shared")).unwrap().len() == want
    });
    let back = std::fs::read(a.path("shared")).unwrap();
    assert_eq!(&back[data.len()..], b"tail\n");

    // Close-to-open within the attribute TTL: A has the file's attributes cached (a stat, a
    // listing) when B appends and closes; A's next open still reads the new end (the open
    // finds the file changed and drops the kernel's cached attributes).
    for round in 0..3 {
        let before = std::fs::metadata(a.path("shared")).unwrap().len();
        a.sh("ls -l > /dev/null");
        b.sh(&format!("echo more{round} >> shared"));
        let back = std::fs::read(a.path("shared")).unwrap();
        assert_eq!(back.len() as u64, before + 6, "round {round}");
        assert_eq!(
            &back[before as usize..],
            format!("more{round}\n").as_bytes()
        );
    }

    // A directory made on A is listed on B.
    a.sh("mkdir -p x/y && echo hi > x/y/z");
    assert_eq!(b.sh("cat x/y/z"), "hi\n");

    drop(a);
    drop(b);
    rt.block_on(cluster.shutdown());
}

/// A modification time set while written data is still buffered in the mount (`futimens`
/// before `close`, as `tar x` and `cp -p` do) is the one the file keeps: the writes' own size
/// commit must not stamp the close's time over it.
#[test]
fn times_set_before_close_outlast_the_buffered_writes() {
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(options()));
    let m = MountGuard::new(&rt, &cluster);
    // Checked through a second mount: this one's kernel keeps the attributes of its own
    // setattr replies for the attribute TTL, whatever the master holds.
    let b = MountGuard::new(&rt, &cluster);
    let when = std::time::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(m.path("written")).unwrap();
        f.write_all(&pattern(3, 300_000)).unwrap();
        f.set_modified(when).unwrap();
        // Written after the time was set: this write's time wins, as on a local disk.
        let mut g = std::fs::File::create(m.path("rewritten")).unwrap();
        g.write_all(b"first").unwrap();
        g.set_modified(when).unwrap();
        g.write_all(b" second").unwrap();
    }
    let meta = std::fs::metadata(b.path("written")).unwrap();
    assert_eq!(meta.len(), 300_000);
    assert_eq!(meta.modified().unwrap(), when);
    let re = std::fs::metadata(b.path("rewritten")).unwrap();
    assert_eq!(re.len(), 12);
    assert!(re.modified().unwrap() > when + Duration::from_secs(86_400));

    // tar x and cp -p keep the archive's and the source's times, as on a local directory.
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for (i, name) in ["a.txt", "b.bin", "c.txt"].iter().enumerate() {
        std::fs::write(src.join(name), pattern(i as u64, 10_000 + i * 50_000)).unwrap();
    }
    m.sh(&format!(
        "touch -d '2001-02-03 04:05:06' {s}/a.txt {s}/b.bin && touch -d '2011-12-13 14:15:16' {s}/c.txt \
         && tar -cf {l}/t.tar -C {s} . && mkdir x && tar -xf {l}/t.tar -C x && cp -p {s}/c.txt copied",
        s = src.display(),
        l = local.path().display()
    ));
    for name in ["a.txt", "b.bin", "c.txt"] {
        assert_eq!(
            std::fs::metadata(b.path(&format!("x/{name}")))
                .unwrap()
                .modified()
                .unwrap(),
            std::fs::metadata(src.join(name))
                .unwrap()
                .modified()
                .unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        std::fs::metadata(b.path("copied"))
            .unwrap()
            .modified()
            .unwrap(),
        std::fs::metadata(src.join("c.txt"))
            .unwrap()
            .modified()
            .unwrap()
    );
    drop(b);
    drop(m);
    rt.block_on(cluster.shutdown());
}

/// A read-only open does not wait for its hold. An unlink through the same mount waits for
/// the holds in flight (so the open file keeps its data even without a trash), and an unlink
/// through another mount that lands before the hold puts the file in the trash, from where the
/// hold takes it back: the reader sees the whole file either way. (Which of the two lands first
/// is not forced here; the engine's `a_hold_that_arrives_after_the_unlink_takes_the_file_back_
/// from_the_trash` and the random replay with late holds cover the trash path.)
#[test]
fn read_only_opens_keep_their_file_through_an_unlink_at_once() {
    if !fuse_available() {
        return;
    }
    use std::io::Read;
    let rt = runtime();
    let data = pattern(11, 300_000);
    let read_all = |f: &mut std::fs::File| {
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        got
    };

    // No trash: the same mount's unlink lands after the hold.
    let cluster = rt.block_on(Cluster::start(options()));
    let m = MountGuard::new(&rt, &cluster);
    for i in 0..20 {
        let path = m.path(&format!("same{i}"));
        std::fs::write(&path, &data).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(sha256(&read_all(&mut f)), sha256(&data), "same{i}");
    }
    drop(m);
    rt.block_on(cluster.shutdown());

    // With a trash: another mount's unlink right after the open.
    let cluster = rt.block_on(Cluster::start(options().trash_retention_ms(600_000)));
    let a = MountGuard::new(&rt, &cluster);
    let b = MountGuard::new(&rt, &cluster);
    for i in 0..20 {
        let name = format!("other{i}");
        std::fs::write(b.path(&name), &data).unwrap();
        let mut f = std::fs::File::open(a.path(&name)).unwrap();
        std::fs::remove_file(b.path(&name)).unwrap();
        assert_eq!(sha256(&read_all(&mut f)), sha256(&data), "{name}");
        drop(f);
        assert!(!b.path(&name).exists());
    }
    drop(b);
    drop(a);
    rt.block_on(cluster.shutdown());
}

/// The master drops the holds of a client it has not heard from for its session timeout (a
/// mount that died). A live mount tells it that it is there, so a file open in it and unlinked
/// elsewhere stays readable across many timeouts; and when its holds were dropped anyway (it was
/// cut off for longer than that: here the master is told to drop them), the mount takes them
/// again at its next call, which brings the file back from the trash.
#[test]
fn a_mount_keeps_its_holds_alive_and_takes_them_back_when_dropped() {
    use quarry_proto::InodeId;
    use std::io::{Read, Seek};
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let timeout = Duration::from_millis(600);
    let cluster = rt.block_on(Cluster::start(
        options()
            .trash_retention_ms(600_000)
            .client_session_timeout_ms(timeout.as_millis() as u64),
    ));
    let client = rt.block_on(cluster.client());
    let m = MountGuard::new(&rt, &cluster);
    let data = pattern(6, 300_000);
    std::fs::write(m.path("w"), &data).unwrap();
    // Open for writing: the hold is taken before the open returns (no deferral).
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("w"))
        .unwrap();
    let ino = rt
        .block_on(client.lookup(InodeId::ROOT, "w"))
        .unwrap()
        .inode;
    rt.block_on(client.unlink(InodeId::ROOT, "w")).unwrap();
    let orphan = || rt.block_on(client.getattr(ino)).is_ok_and(|a| a.nlink == 0);
    let held_since = std::time::Instant::now();
    wait_until(
        "five session timeouts with the file still held",
        Duration::from_secs(30),
        || {
            assert!(orphan(), "the mount's hold was dropped while it was alive");
            held_since.elapsed() > timeout * 5
        },
    );
    let holders = cluster.master().holders(ino);
    assert_eq!(holders.len(), 1, "{holders:?}");
    // Once this returns the file is in the trash (its only hold is gone); only the mount's
    // taking its hold again brings it back as an open orphan.
    rt.block_on(cluster.master().drop_client_holds(holders[0]))
        .unwrap();
    wait_until(
        "the mount to take its hold again",
        Duration::from_secs(20),
        orphan,
    );
    let mut got = Vec::new();
    f.rewind().unwrap();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(sha256(&got), sha256(&data));
    drop(f);
    wait_until(
        "the file to go back to the trash after its close",
        Duration::from_secs(10),
        || rt.block_on(client.getattr(ino)).is_err(),
    );
    drop(m);
}

/// With a trash, a read-only open takes its hold only once it has been open `HOLD_DEFER`: a
/// file read and closed at once costs no hold (and no drop), so an unlink elsewhere right after
/// sends it straight to the trash. A file unlinked elsewhere while open here is taken back from
/// the trash when its deferred hold falls due, at once when a read finds it gone, and before an
/// unlink through the mount; the reader sees the whole file every time.
#[test]
fn read_only_opens_defer_their_holds_while_the_cluster_keeps_a_trash() {
    use quarry_proto::InodeId;
    use std::io::Read;
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(options().trash_retention_ms(600_000)));
    let client = rt.block_on(cluster.client());
    let m = MountGuard::new(&rt, &cluster);
    let data = pattern(5, 200_000);
    let put = |name: &str| -> InodeId {
        rt.block_on(async {
            let a = client
                .create(InodeId::ROOT, name, 0o644, 0, 0, true)
                .await
                .unwrap();
            client
                .write(a.inode, 0, bytes::Bytes::copy_from_slice(&data))
                .await
                .unwrap();
            a.inode
        })
    };
    let gone = |ino: InodeId| rt.block_on(client.getattr(ino)).is_err();
    let orphan = |ino: InodeId| rt.block_on(client.getattr(ino)).is_ok_and(|a| a.nlink == 0);
    let unlink = |name: &str| rt.block_on(client.unlink(InodeId::ROOT, name)).unwrap();
    let read_all = |f: &mut std::fs::File| {
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        got
    };

    // Read and closed at once: no hold lingers, the unlink elsewhere trashes the file. (The
    // mount learns the cluster's retention from the masters, which log it after their
    // election: until then its opens take holds, so this is retried until it holds.)
    let mut probe = 0;
    wait_until(
        "a read-only open and close to leave no hold",
        Duration::from_secs(20),
        || {
            probe += 1;
            let name = format!("quick{probe}");
            let ino = put(&name);
            assert_eq!(std::fs::read(m.path(&name)).unwrap(), data);
            unlink(&name);
            gone(ino)
        },
    );
    let quick = (0..5)
        .map(|i| {
            let name = format!("again{i}");
            let ino = put(&name);
            assert_eq!(std::fs::read(m.path(&name)).unwrap(), data);
            unlink(&name);
            gone(ino)
        })
        .filter(|g| *g)
        .count();
    assert_eq!(quick, 5, "every quick read-only open left no hold");

    // Open past the deferral, unlinked elsewhere first: the due hold takes the file back.
    let ino = put("long");
    let mut f = std::fs::File::open(m.path("long")).unwrap();
    unlink("long");
    assert!(gone(ino), "no hold yet: the unlink trashed it");
    wait_until(
        "the deferred hold to take the file back from the trash",
        Duration::from_secs(10),
        || orphan(ino),
    );
    assert_eq!(sha256(&read_all(&mut f)), sha256(&data));
    drop(f);
    wait_until(
        "the file to go back to the trash after its close",
        Duration::from_secs(10),
        || gone(ino),
    );

    // Unlinked elsewhere before the first read: the read takes it back and goes on.
    let ino = put("early");
    let mut f = std::fs::File::open(m.path("early")).unwrap();
    unlink("early");
    assert_eq!(sha256(&read_all(&mut f)), sha256(&data));
    assert!(orphan(ino), "the read took the file back");
    drop(f);

    // Unlinked through the mount while open read-only: the hold goes first.
    let ino = put("here");
    let mut f = std::fs::File::open(m.path("here")).unwrap();
    std::fs::remove_file(m.path("here")).unwrap();
    assert!(orphan(ino), "held before the unlink");
    assert_eq!(sha256(&read_all(&mut f)), sha256(&data));
    drop(f);
    assert!(!m.path("here").exists());

    drop(m);
    rt.block_on(cluster.shutdown());
}

/// Whether `cmd` is on the PATH (the xattr checks need the `attr` package's tools).

#[test]
fn symlinks_links_fifos_xattrs_and_unlink_while_open() {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(options()));
    let m = MountGuard::new(&rt, &cluster);

    // symlink + readlink (and following it)
    std::fs::write(m.path("target.txt"), b"pointed at\n").unwrap();
    std::os::unix::fs::symlink("target.txt", m.path("link")).unwrap();
    assert_eq!(
        std::fs::read_link(m.path("link")).unwrap(),
        Path::new("target.txt")
    );
    assert!(std::fs::symlink_metadata(m.path("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(m.path("link")).unwrap(), b"pointed at\n");

    // hard link: two names, one inode, nlink 2
    std::fs::hard_link(m.path("target.txt"), m.path("hard")).unwrap();
    let (a, b) = (
        std::fs::metadata(m.path("target.txt")).unwrap(),
        std::fs::metadata(m.path("hard")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(b.nlink(), 2);
    assert_eq!(std::fs::read(m.path("hard")).unwrap(), b"pointed at\n");

    // mkfifo
    m.sh("mkfifo pipe");
    assert!(std::fs::metadata(m.path("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());

    // xattrs through the attr package's tools
    if have_command("setfattr") && have_command("getfattr") {
        m.sh("setfattr -n user.color -v blue target.txt");
        m.sh("setfattr -n user.shape -v round target.txt");
        assert_eq!(
            m.sh("getfattr --only-values -n user.color target.txt"),
            "blue"
        );
        let listed = m.sh("getfattr -d target.txt");
        assert!(listed.contains("user.color=\"blue\""), "{listed}");
        assert!(listed.contains("user.shape=\"round\""), "{listed}");
        m.sh("setfattr -x user.color target.txt");
        let listed = m.sh("getfattr -d target.txt");
        assert!(!listed.contains("user.color"), "{listed}");
        // No POSIX ACLs and no SELinux labels, as on a filesystem without their support (ls -l
        // then stops asking for labels).
        for cmd in [
            "getfattr -n system.posix_acl_access target.txt",
            "getfattr -n security.selinux target.txt",
            "setfattr -n security.selinux -v x target.txt",
            "setfattr -x security.selinux target.txt",
        ] {
            let out = m.sh(&format!("{cmd} 2>&1 && echo UNEXPECTED || true"));
            assert!(out.contains("Operation not supported"), "{cmd}: {out}");
        }
    } else {
        eprintln!("skipping the xattr checks: setfattr/getfattr missing (run scripts/setup.sh)");
    }

    // security.capability: the kernel asks for it before every write; the mount answers while
    // it knows the file has none (created here, or the master said so within the attribute
    // TTL), and a change through this mount is seen at once, here and through another mount.
    if have_command("setcap") && have_command("getcap") {
        m.sh("printf data > capfile && printf ' more' >> capfile");
        assert_eq!(m.sh("getcap capfile"), "");
        m.sh("setcap cap_net_raw+ep capfile");
        assert!(m.sh("getcap capfile").contains("cap_net_raw"));
        let other = MountGuard::new(&rt, &cluster);
        assert!(other.sh("getcap capfile").contains("cap_net_raw"));
        m.sh("setcap -r capfile");
        assert_eq!(m.sh("getcap capfile"), "");
        m.sh("printf ' again' >> capfile");
        assert_eq!(other.sh("cat capfile"), "data more again");
        m.sh("rm capfile");
    } else {
        eprintln!("skipping the capability checks: setcap/getcap missing (run scripts/setup.sh)");
    }

    // unlink while open: the open file stays readable and writable until it is closed
    let path = m.path("doomed");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(b"before ").unwrap();
    f.sync_all().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!path.exists());
    f.write_all(b"after").unwrap();
    f.sync_all().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, "before after");
    drop(f);
    assert_eq!(m.sh("ls -1 | sort"), "hard\nlink\npipe\ntarget.txt\n");
}

/// A close does not wait for its open hold's drop: the hold lingers (`HOLD_LINGER`) and is
/// dropped in the background. A file closed in the mount and then unlinked by another client is
/// kept by that hold only until then; one unlinked through the mount itself goes at once (the
/// mount drops its lingering holds before an unlink); a reopen within the linger reuses it.
#[test]
fn holds_of_closed_files_linger_and_are_dropped_in_the_background() {
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(options()));
    let client = rt.block_on(cluster.client());
    let m = MountGuard::new(&rt, &cluster);
    let data = pattern(3, 100_000);

    // Closed here, unlinked elsewhere: an orphan until the lingering hold goes.
    std::fs::write(m.path("elsewhere"), &data).unwrap();
    let ino = rt.block_on(client.stat("/elsewhere")).unwrap().inode;
    rt.block_on(client.unlink(quarry_proto::InodeId::ROOT, "elsewhere"))
        .unwrap();
    wait_until(
        "the lingering hold of the closed file to be dropped",
        Duration::from_secs(10),
        || rt.block_on(client.getattr(ino)).is_err(),
    );

    // Closed here, unlinked here: gone when the unlink returns.
    std::fs::write(m.path("here"), &data).unwrap();
    let ino = rt.block_on(client.stat("/here")).unwrap().inode;
    std::fs::remove_file(m.path("here")).unwrap();
    assert!(
        rt.block_on(client.getattr(ino)).is_err(),
        "a file closed and unlinked in the mount is gone at once"
    );

    // Reopened within the linger (the hold is reused, not dropped): still protected against an
    // unlink elsewhere for as long as it is open, well past the linger.
    std::fs::write(m.path("again"), &data).unwrap();
    let ino = rt.block_on(client.stat("/again")).unwrap().inode;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(m.path("again")).unwrap();
        rt.block_on(client.unlink(quarry_proto::InodeId::ROOT, "again"))
            .unwrap();
        // Nothing to wait for here: this checks that nothing happens meanwhile.
        std::thread::sleep(quarry_fs::HOLD_LINGER * 2);
        let orphan = rt.block_on(client.getattr(ino)).expect("held while open");
        assert_eq!(orphan.nlink, 0);
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data, "an open file outlives its unlink elsewhere");
    }
    wait_until(
        "the reopened file's hold to be dropped after its close",
        Duration::from_secs(10),
        || rt.block_on(client.getattr(ino)).is_err(),
    );
    assert!(!m.path("again").exists());
    drop(m);
    rt.block_on(cluster.shutdown());
}

/// The kernel forgets a directory's attributes after each change to its entries and asks again;
/// the mount answers from the change's reply (within the TTL). What `stat` shows must still be
/// what the master has: the times and link count a change made, and a change of the directory's
/// own attributes at once.
#[test]
fn a_directory_is_stat_right_after_changes_through_the_mount() {
    use quarry_proto::InodeId;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !fuse_available() {
        return;
    }
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(options()));
    let client = rt.block_on(cluster.client());
    let m = MountGuard::new(&rt, &cluster);
    let master = |path: &str| {
        rt.block_on(async {
            let mut a = client.getattr(InodeId::ROOT).await.unwrap();
            for name in path.split('/').filter(|n| !n.is_empty()) {
                a = client.lookup(a.inode, name).await.unwrap();
            }
            a
        })
    };
    // What stat(2) shows of a directory, against the master's attributes.
    let same = |path: &str, what: &str| {
        let st = std::fs::metadata(m.path(path)).unwrap();
        let a = master(path);
        assert_eq!(
            (
                st.mode() & 0o7777,
                st.nlink(),
                st.uid(),
                st.mtime(),
                st.mtime_nsec(),
                st.ctime(),
                st.ctime_nsec()
            ),
            (
                a.mode & 0o7777,
                a.nlink as u64,
                a.uid,
                a.mtime.secs,
                a.mtime.nanos as i64,
                a.ctime.secs,
                a.ctime.nanos as i64
            ),
            "{path} after {what}"
        );
    };

    std::fs::create_dir(m.path("d")).unwrap();
    same("", "mkdir");
    std::fs::write(m.path("d/f"), b"x").unwrap();
    same("d", "create");
    std::fs::create_dir(m.path("d/sub")).unwrap();
    same("d", "mkdir inside");
    assert_eq!(std::fs::metadata(m.path("d")).unwrap().nlink(), 3);
    std::fs::set_permissions(m.path("d"), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        std::fs::metadata(m.path("d")).unwrap().mode() & 0o7777,
        0o700
    );
    same("d", "chmod");
    std::fs::write(m.path("d/g"), b"y").unwrap();
    same("d", "create after chmod");
    std::os::unix::fs::chown(m.path("d"), Some(1234), None).unwrap();
    assert_eq!(std::fs::metadata(m.path("d")).unwrap().uid(), 1234);
    same("d", "chown");
    std::fs::rename(m.path("d/g"), m.path("d/h")).unwrap();
    same("d", "rename inside");
    std::fs::rename(m.path("d/sub"), m.path("sub")).unwrap();
    same("d", "a directory moved out");
    same("", "a directory moved in");
    same("sub", "its move");
    assert_eq!(std::fs::metadata(m.path("d")).unwrap().nlink(), 2);
    std::fs::rename(m.path("d"), m.path("e")).unwrap();
    same("e", "its rename");
    std::fs::write(m.path("e/i"), b"z").unwrap();
    same("e", "create after rename");
    std::fs::remove_file(m.path("e/i")).unwrap();
    same("e", "unlink");
    std::fs::remove_dir(m.path("sub")).unwrap();
    same("", "rmdir");
    m.sh("ln e/f e/f2 && ln -s f e/s && mkfifo e/p");
    same("e", "link, symlink, mknod");
    m.sh("setfattr -n user.k -v 1 e 2>/dev/null || true");
    same("e", "setxattr");
    drop(m);
    rt.block_on(cluster.shutdown());
}
