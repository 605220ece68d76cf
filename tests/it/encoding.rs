//! Grouping keys with any label values: the agent's encoder → a real Pushgateway → read
//! back gives the same labels, and deleting by the same path removes the group.

use arkouda_push_agent::sinks::pushgateway::GroupingKey;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::common::*;

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        // Anything printable, with the troublesome characters made likely.
        "[a-z/ .%?#@=+\\\\\"'\u{e9}\u{4e2d}\u{1f600}-]{0,12}",
        any::<String>().prop_map(|s| s.chars().filter(|c| !c.is_control()).take(16).collect()),
        Just(String::new()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("/".to_string()),
    ]
}

#[test]
fn any_label_value_round_trips_through_the_pushgateway() {
    let pg = Pushgateway::start();
    let http = reqwest::blocking::Client::new();
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    let strategy = ("[a-zA-Z0-9_.:/ -]{1,10}", value(), value());
    runner
        .run(&strategy, |(job, a, b)| {
            let key = GroupingKey::new(
                &job,
                vec![
                    ("slurm_job_id".into(), "p".into()),
                    ("a".into(), a.clone()),
                    ("b".into(), b.clone()),
                ],
            );
            let url = format!("{}{}", pg.url, key.path());
            let resp = http.put(&url).body("roundtrip_probe 1\n").send().unwrap();
            prop_assert!(
                resp.status().is_success(),
                "PUT {} -> {}",
                url,
                resp.status()
            );
            let groups = pg.job_groups("p");
            prop_assert_eq!(groups.len(), 1, "{:?}", groups);
            let got = &groups[0].labels;
            let get = |k: &str| got.get(k).cloned().unwrap_or_default();
            // An empty value and a missing label are the same thing to Prometheus.
            prop_assert_eq!(get("job"), job.clone());
            prop_assert_eq!(get("a"), a.clone());
            prop_assert_eq!(get("b"), b.clone());
            let resp = http.delete(&url).send().unwrap();
            prop_assert!(resp.status().is_success());
            eventually(
                std::time::Duration::from_secs(2),
                "the group deleted",
                || {
                    if pg.job_groups("p").is_empty() {
                        Ok(())
                    } else {
                        Err("still there".into())
                    }
                },
            );
            Ok(())
        })
        .unwrap();
}
