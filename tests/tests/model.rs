//! Random writes, reads and truncates at any offset, through the client library against a
//! loopback cluster with small chunks, checked against an in-memory model of the file.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use quarry_proto::InodeId;
use quarry_tests::*;

const CHUNK: u64 = 128 << 10;
const SPAN: u64 = 5 * CHUNK + 1234;

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, len: usize, seed: u64 },
    Read { offset: u64, len: u64 },
    Truncate { size: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SPAN, 1usize..(2 * CHUNK as usize), any::<u64>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        2 => (0..SPAN + CHUNK, 0..(3 * CHUNK)).prop_map(|(offset, len)| Op::Read { offset, len }),
        1 => (0..SPAN).prop_map(|size| Op::Truncate { size }),
    ]
}

#[test]
fn random_writes_reads_and_truncates_match_a_model() {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(Cluster::start(Options::default().chunk_size(CHUNK)));
    let client = rt.block_on(cluster.client());
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&proptest::collection::vec(op(), 1..14), |ops| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(async {
                let attr = client
                    .create(InodeId::ROOT, &format!("case-{case}"), 0o644, 0, 0, true)
                    .await
                    .unwrap();
                let mut model: Vec<u8> = Vec::new();
                for op in &ops {
                    match *op {
                        Op::Write { offset, len, seed } => {
                            let data = pattern(seed, len);
                            client
                                .write(attr.inode, offset, Bytes::from(data.clone()))
                                .await
                                .unwrap();
                            let end = offset as usize + len;
                            if model.len() < end {
                                model.resize(end, 0);
                            }
                            model[offset as usize..end].copy_from_slice(&data);
                        }
                        Op::Read { offset, len } => {
                            let size = client.getattr(attr.inode).await.unwrap().size;
                            prop_assert_eq!(size, model.len() as u64);
                            let got = client.read(attr.inode, offset, len, size).await.unwrap();
                            let start = (offset as usize).min(model.len());
                            let end = (offset + len).min(model.len() as u64) as usize;
                            prop_assert!(got == model[start..end.max(start)], "read {:?}", op);
                        }
                        Op::Truncate { size } => {
                            client.truncate(attr.inode, size).await.unwrap();
                            model.resize(size as usize, 0);
                        }
                    }
                }
                let size = client.getattr(attr.inode).await.unwrap().size;
                prop_assert_eq!(size, model.len() as u64);
                let all = client.read(attr.inode, 0, size, size).await.unwrap();
                prop_assert!(all == model, "final contents differ after {:?}", ops);
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(cluster.shutdown());
}
