//! In-process cost of one cycle: parse a metrics `ALL` reply and build the job's exposition
//! body, for 1, 64, 1024 and 4096 locales. Time per cycle from criterion; allocations per
//! cycle from a counting allocator, printed before the timings.
//!
//!     cargo bench --bench cycle
//!
//! The reply is built here in the shape Arkouda v2024.04.19+ sends (the simulator's
//! workload at tick 100, one user), so the bench needs no server.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

use arkouda_push_agent::arkouda::protocol;
use arkouda_push_agent::model;
use arkouda_push_agent::translate::{self, AgentStats, Context, Snapshot};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SIZES: [usize; 4] = [1, 64, 1024, 4096];
#[path = "tools/synthetic.rs"]
mod synthetic;
use synthetic::replies;

/// One cycle's work on the agent's side: parse, translate, encode.
fn cycle(
    all: &str,
    info: &protocol::ServerInfo,
    stats: &AgentStats,
    ctx: &Context,
    body: &mut String,
) -> usize {
    let records = protocol::parse_records(all).expect("parse");
    let t = translate::translate(
        &Snapshot {
            records: Some(&records.records),
            server_info: Some(info),
            agent: stats,
        },
        ctx,
    );
    model::encode_text(&t.families, &[], body).expect("encode");
    body.len()
}

fn bench(c: &mut Criterion) {
    let stats = AgentStats::default();
    let ctx = Context {
        server_name: "arkouda-metrics".into(),
        ..Context::default()
    };
    let mut group = c.benchmark_group("parse_translate_encode");
    // Only under `cargo bench` (which passes --bench): a test runner listing the
    // benchmarks (nextest --list) must see nothing else on stdout.
    let measuring = std::env::args().any(|a| a == "--bench");
    if measuring {
        println!("allocations per cycle (parse ALL reply + translate + encode):");
    }
    for n in SIZES {
        let (all, info) = replies(n);
        let info = protocol::parse_server_info(&info).expect("server info");
        let mut body = String::new();
        cycle(&all, &info, &stats, &ctx, &mut body); // warm the body buffer
        let (a0, b0) = (
            ALLOCS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        );
        let len = cycle(&all, &info, &stats, &ctx, &mut body);
        let (a1, b1) = (
            ALLOCS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        );
        let series = body.lines().filter(|l| !l.starts_with('#')).count();
        if measuring {
            println!(
            "  {n:>5} locales: reply {:>8} B, body {len:>8} B, {series:>6} series, {:>8} allocations, {:>10} bytes allocated",
            all.len(),
            a1 - a0,
            b1 - b0
        );
        }
        group.throughput(Throughput::Elements(series as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| cycle(&all, &info, &stats, &ctx, &mut body))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
