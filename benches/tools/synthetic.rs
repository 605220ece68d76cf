//! A metrics `ALL` reply and a SERVER_INFO reply for any number of locales, in the shape
//! Arkouda v2024.10+ sends (the simulator's workload at tick 100, one user), for benches
//! that need no server.

const COMMANDS: [&str; 6] = [
    "connect",
    "getconfig",
    "create",
    "randint",
    "sum",
    "bad_cmd",
];

fn record(name: &str, category: &str, scope: &str, value: f64, extra: &str) -> String {
    format!(
        "{{\"name\":\"{name}\", \"category\":\"{category}\", \"scope\":\"{scope}\", \"timestamp\":\"2024-05-02T14:03:11.512345\", \"value\":{value:.6e}{extra}}}"
    )
}

/// The `msg` of an ALL reply, and the SERVER_INFO `msg`, for `locales` locales.
pub fn replies(locales: usize) -> (String, String) {
    let mut recs = Vec::new();
    for cat in [
        "NUM_REQUESTS",
        "RESPONSE_TIME",
        "AVG_RESPONSE_TIME",
        "TOTAL_RESPONSE_TIME",
        "TOTAL_MEMORY_USED",
    ] {
        for (i, c) in COMMANDS.iter().enumerate() {
            recs.push(record(c, cat, "GLOBAL", 100.0 * (i + 1) as f64, ""));
        }
        if cat == "NUM_REQUESTS" {
            recs.push(record("total", cat, "GLOBAL", 2100.0, ""));
        }
    }
    for l in 0..locales {
        let loc = format!(", \"locale_num\":{l}, \"locale_name\":\"nid{l:05}\", \"locale_hostname\":\"nid{l:05}\"");
        recs.push(record(
            "arkouda_memory_used_per_locale",
            "SYSTEM",
            "LOCALE",
            1e10,
            &loc,
        ));
        recs.push(record(
            "arkouda_percent_memory_used_per_locale",
            "SYSTEM",
            "LOCALE",
            3.637979,
            &loc,
        ));
    }
    for (i, c) in COMMANDS.iter().enumerate() {
        recs.push(record(
            c,
            "NUM_REQUESTS",
            "USER",
            100.0 * (i + 1) as f64,
            ", \"user\":\"alice\"",
        ));
    }
    recs.push(record(
        "total",
        "NUM_REQUESTS",
        "USER",
        2100.0,
        ", \"user\":\"alice\"",
    ));
    recs.push(record("total", "NUM_ERRORS", "GLOBAL", 0.0, ""));
    let all = format!("[{}]", recs.join(", "));
    let locs: Vec<String> = (0..locales)
        .map(|l| format!("{{\"name\":\"nid{l:05}\", \"id\":\"{l}\", \"hostname\":\"nid{l:05}\", \"number_of_processing_units\":128, \"physical_memory\":274877906944, \"max_number_of_tasks\":128}}"))
        .collect();
    let info = format!(
        "{{\"hostname\":\"nid00000\", \"version\":\"v2024.10.02\", \"server_port\":5555, \"locales\":[{}], \"number_of_locales\":{locales}}}",
        locs.join(", ")
    );
    (all, info)
}
