//! A site model: J concurrent jobs of L locales, each pushing its group every interval,
//! driven from one process through the agent's own sinks (the Pushgateway sink, or the
//! remote-write sink), with the jobs' phases spread over the interval as agents started at
//! random times would be. Prints per-push latency and how many pushes finished within
//! their interval; `benches/site.sh` adds the receiver's CPU.
//!
//!     site_model pushgateway URL[,URL...] JOBS LOCALES INTERVAL_MS INTERVALS
//!     site_model remote-write URL JOBS LOCALES INTERVAL_MS INTERVALS

#[path = "synthetic.rs"]
mod synthetic;

use std::sync::Arc;
use std::time::Duration;

use arkouda_push_agent::arkouda::protocol;
use arkouda_push_agent::model;
use arkouda_push_agent::sinks::http::ClientOptions;
use arkouda_push_agent::sinks::pushgateway::{self, GroupingKey, Payload, Pushgateway};
use arkouda_push_agent::sinks::remote_write::{RemoteWriteSettings, RemoteWriteSink};
use arkouda_push_agent::sinks::{Counters, Cycle, Sink};
use arkouda_push_agent::translate::{self, AgentStats, Context, Snapshot};
use tokio::sync::Mutex;
use tokio::time::Instant;

fn families(locales: usize) -> Vec<model::Family> {
    let (all, info) = synthetic::replies(locales);
    let records = protocol::parse_records(&all).expect("records");
    let info = protocol::parse_server_info(&info).expect("info");
    translate::families(
        &Snapshot {
            records: Some(&records.records),
            server_info: Some(&info),
            agent: &AgentStats::default(),
        },
        &Context {
            server_name: "site".into(),
            ..Context::default()
        },
    )
}

fn client() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(30),
        user_agent: "site-model".into(),
        username: None,
        password: None,
        bearer_token: None,
        ca_file: None,
        insecure_skip_verify: false,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, target) = (args[1].as_str(), args[2].clone());
    let jobs: usize = args[3].parse().expect("JOBS");
    let locales: usize = args[4].parse().expect("LOCALES");
    let interval = Duration::from_millis(args[5].parse().expect("INTERVAL_MS"));
    let intervals: u32 = args[6].parse().expect("INTERVALS");
    let fams = Arc::new(families(locales));
    let mut text = String::new();
    model::encode_text(&fams, &[], &mut text).expect("encode");
    let body = bytes::Bytes::from(text);
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let late = Arc::new(Mutex::new(0u64));
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    let urls: Vec<String> = target.split(',').map(str::to_string).collect();
    for j in 0..jobs {
        let job_id = format!("site-{j}");
        let phase = interval.mul_f64(j as f64 / jobs as f64);
        let (latencies, late, fams, body) =
            (latencies.clone(), late.clone(), fams.clone(), body.clone());
        let key = GroupingKey::new("arkouda", vec![("slurm_job_id".into(), job_id.clone())]);
        if mode == "pushgateway" {
            let url = urls[pushgateway::shard(&job_id, urls.len())].clone();
            let pgw = Pushgateway::new(&url, &client()).expect("pushgateway");
            tasks.push(tokio::spawn(async move {
                for i in 0..intervals {
                    let at = start + phase + interval * i;
                    tokio::time::sleep_until(at).await;
                    let t = Instant::now();
                    let ok = pgw
                        .push(&key, Payload::new(body.clone(), 0), at + interval * 4)
                        .await
                        .is_ok();
                    let took = t.elapsed();
                    latencies.lock().await.push(took.as_secs_f64() * 1e3);
                    if !ok || took > interval {
                        *late.lock().await += 1;
                    }
                }
                let _ = pgw
                    .delete(&key, Instant::now() + Duration::from_secs(30))
                    .await;
            }));
        } else {
            let mut rw = RemoteWriteSink::new(
                &RemoteWriteSettings {
                    urls: vec![target.clone()],
                    client: client(),
                    queue_size: 8,
                },
                key.pairs(),
                Arc::new(Counters::default()),
            )
            .expect("remote write");
            tasks.push(tokio::spawn(async move {
                for i in 0..intervals {
                    let at = start + phase + interval * i;
                    tokio::time::sleep_until(at).await;
                    // The cycle the lifecycle would hand over (not part of the timing).
                    let cycle = Arc::new(Cycle::now(fams.to_vec()));
                    let t = Instant::now();
                    rw.ship(cycle, at + interval * 4).await;
                    let ok = rw.flush(at + interval * 4).await;
                    let took = t.elapsed();
                    latencies.lock().await.push(took.as_secs_f64() * 1e3);
                    if !ok || took > interval {
                        *late.lock().await += 1;
                    }
                }
                let _ = rw.end(Instant::now() + Duration::from_secs(30)).await;
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut l = latencies.lock().await.clone();
    l.sort_by(f64::total_cmp);
    let late = *late.lock().await;
    println!(
        "pushes {} late_or_failed {} p50_ms {:.2} p99_ms {:.2} max_ms {:.2} body_bytes {}",
        l.len(),
        late,
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        body.len()
    );
}
