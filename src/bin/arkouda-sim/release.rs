//! Imitated Arkouda releases: one mode per behaviour boundary of the metrics
//! port, up to the newest tag, and what each one declares and knows.
//!
//! See `docs/arkouda-protocol.md` (§1 releases, §3 request record, §6
//! categories, §7 getconfig), which cites the upstream file and tag of each fact.

use std::fmt;

/// The releases the simulator can imitate, in chronological order (the
/// derived ordering is used for "from release X on" checks). Each is the
/// first tag of a behaviour the metrics port shows to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Release {
    /// The first metrics daemon: bare-string `args`.
    V2022_08_15,
    /// JSON `args` for `metrics` (parsed by `metricsMsg` whatever `size`);
    /// getconfig gains chplVersion; connection info gains the URL.
    V2022_09_30,
    /// `args` of every command with `size` > 0 parsed before dispatch.
    V2022_11_10,
    /// getconfig gains autoShutdown and serverInfoNoSplash.
    V2022_12_09,
    /// AVG_RESPONSE_TIME (array commands only); getconfig gains logChannel.
    V2023_02_08,
    /// RESPONSE_TIME and AVG_RESPONSE_TIME for every command; memMax.
    V2023_03_01,
    /// TOTAL_RESPONSE_TIME, TOTAL_MEMORY_USED; categories alone.
    V2023_04_07,
    /// NUM_ERRORS per error class.
    V2024_04_19,
    /// No objType; `MsgTuple` replies with payload; NUM_ERRORS only `total`;
    /// failed commands counted; getconfig gains maxArrayDims.
    V2024_10_02,
    /// getconfig gains pythonVersion.
    V2025_07_03,
    /// getconfig loses maxArrayDims.
    V2025_09_30,
    /// The newest tag, v2026.07.15 (getconfig with numNodes and
    /// LocaleConfigs[].numColocales, from v2025.12.16).
    Head,
}

impl Release {
    pub const ALL: [Release; 12] = [
        Release::V2022_08_15,
        Release::V2022_09_30,
        Release::V2022_11_10,
        Release::V2022_12_09,
        Release::V2023_02_08,
        Release::V2023_03_01,
        Release::V2023_04_07,
        Release::V2024_04_19,
        Release::V2024_10_02,
        Release::V2025_07_03,
        Release::V2025_09_30,
        Release::Head,
    ];

    /// Parse `2024.04.19`, `v2024.04.19`, `head` (or `2026.07.15`).
    pub fn parse(s: &str) -> Result<Release, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("head") {
            return Ok(Release::Head);
        }
        let t = t.strip_prefix('v').unwrap_or(t);
        Release::ALL
            .into_iter()
            .find(|r| r.tag() == t)
            .ok_or_else(|| {
                let known: Vec<&str> = Release::ALL.iter().map(|r| r.tag()).collect();
                format!(
                    "unknown release {s:?}; expected one of {} or head",
                    known.join(", ")
                )
            })
    }

    /// The release tag without the leading `v`.
    pub fn tag(self) -> &'static str {
        match self {
            Release::V2022_08_15 => "2022.08.15",
            Release::V2022_09_30 => "2022.09.30",
            Release::V2022_11_10 => "2022.11.10",
            Release::V2022_12_09 => "2022.12.09",
            Release::V2023_02_08 => "2023.02.08",
            Release::V2023_03_01 => "2023.03.01",
            Release::V2023_04_07 => "2023.04.07",
            Release::V2024_04_19 => "2024.04.19",
            Release::V2024_10_02 => "2024.10.02",
            Release::V2025_07_03 => "2025.07.03",
            Release::V2025_09_30 => "2025.09.30",
            Release::Head => "2026.07.15",
        }
    }

    /// `arkoudaVersion` / SERVER_INFO `version`.
    pub fn version_string(self) -> String {
        format!("v{}", self.tag())
    }

    /// A plausible Chapel version for the era (only ever shown as a string).
    pub fn chpl_version(self) -> &'static str {
        match self {
            Release::V2022_08_15 => "1.27.0",
            Release::V2022_09_30 | Release::V2022_11_10 | Release::V2022_12_09 => "1.28.0",
            Release::V2023_02_08 | Release::V2023_03_01 => "1.29.0",
            Release::V2023_04_07 => "1.30.0",
            Release::V2024_04_19 => "2.0.0",
            Release::V2024_10_02 => "2.1.0",
            Release::V2025_07_03 | Release::V2025_09_30 => "2.4.0",
            Release::Head => "2.5.0",
        }
    }

    /// The top-level keys of `getconfig`, in the order the release writes
    /// them (the fields of its `Config` class), and no others.
    pub fn getconfig_keys(self) -> Vec<&'static str> {
        let mut k = vec!["arkoudaVersion"];
        if self >= Release::V2022_09_30 {
            k.push("chplVersion");
        }
        if self >= Release::V2025_07_03 {
            k.push("pythonVersion");
        }
        k.extend([
            "ZMQVersion",
            "HDF5Version",
            "serverHostname",
            "ServerPort",
            "numLocales",
        ]);
        if self >= Release::Head {
            k.push("numNodes");
        }
        k.extend([
            "numPUs",
            "maxTaskPar",
            "physicalMemory",
            "distributionType",
            "LocaleConfigs",
            "authenticate",
            "logLevel",
        ]);
        if self >= Release::V2023_02_08 {
            k.push("logChannel");
        }
        k.extend(["regexMaxCaptures", "byteorder"]);
        if self >= Release::V2022_12_09 {
            k.extend(["autoShutdown", "serverInfoNoSplash"]);
        }
        if (Release::V2024_10_02..Release::V2025_09_30).contains(&self) {
            k.push("maxArrayDims");
        }
        k
    }

    /// The keys of one `LocaleConfigs` entry, in order.
    pub fn locale_config_keys(self) -> Vec<&'static str> {
        if self >= Release::Head {
            vec![
                "id",
                "name",
                "numPUs",
                "numColocales",
                "maxTaskPar",
                "physicalMemory",
            ]
        } else {
            vec!["id", "name", "numPUs", "maxTaskPar", "physicalMemory"]
        }
    }

    /// `metrics` reads its `args` as JSON parameters whatever `size` says
    /// (v2022.09.30 – v2022.10.13; later the list is parsed before dispatch).
    pub fn metrics_parses_args_always(self) -> bool {
        self.json_args() && self < Release::V2022_11_10
    }

    /// The daemon parses the `args` of every command with `size` > 0 before
    /// it dispatches (v2022.11.10 on).
    pub fn parses_args_before_dispatch(self) -> bool {
        self >= Release::V2022_11_10
    }

    /// `metrics` args are a JSON parameter list (else: a bare string cast whole).
    pub fn json_args(self) -> bool {
        self >= Release::V2022_09_30
    }

    /// The parameter record declares `objType` (v2022.09.30 – v2024.06.21).
    pub fn params_have_obj_type(self) -> bool {
        self.json_args() && self < Release::V2024_10_02
    }

    /// Reply is a `ReplyMsg` (msg, msgType, msgFormat, user echoing the request)
    /// rather than a `MsgTuple` (adds payload; metrics port sends user "").
    pub fn legacy_reply(self) -> bool {
        self <= Release::V2024_04_19
    }

    /// Connection-info file is `<host> <port> <url>` (else `<host> <port>`).
    pub fn conn_info_has_url(self) -> bool {
        self >= Release::V2022_09_30
    }

    /// Percent-memory denominator honours `--memMax`.
    pub fn honours_mem_max(self) -> bool {
        self >= Release::V2023_03_01
    }

    /// Failed commands are counted in the request metrics.
    pub fn counts_failed_commands(self) -> bool {
        self >= Release::V2024_10_02
    }

    /// The members of the `MetricCategory` enum in this release.
    pub fn categories(self) -> Vec<Category> {
        use Category::*;
        let mut v = vec![All, NumRequests, ResponseTime];
        if self >= Release::V2023_02_08 {
            v.push(AvgResponseTime);
        }
        if self >= Release::V2023_04_07 {
            v.push(TotalResponseTime);
            v.push(TotalMemoryUsed);
        }
        v.extend([System, Server, ServerInfo]);
        if self >= Release::V2024_04_19 {
            v.push(NumErrors);
        }
        v
    }

    /// Whether `metrics` with this category alone gets an answer (otherwise
    /// the category falls through the server's `select` and throws).
    pub fn can_request_alone(self, c: Category) -> bool {
        use Category::*;
        if !self.categories().contains(&c) {
            return false;
        }
        match c {
            All | NumRequests | System | Server | ServerInfo => true,
            AvgResponseTime | TotalResponseTime | TotalMemoryUsed => self >= Release::V2023_04_07,
            NumErrors => self >= Release::V2024_04_19,
            ResponseTime => false,
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.tag())
    }
}

/// `MetricCategory` (HEAD order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    All,
    NumRequests,
    ResponseTime,
    AvgResponseTime,
    TotalResponseTime,
    TotalMemoryUsed,
    System,
    Server,
    ServerInfo,
    NumErrors,
}

impl Category {
    pub const EVERY: [Category; 10] = [
        Category::All,
        Category::NumRequests,
        Category::ResponseTime,
        Category::AvgResponseTime,
        Category::TotalResponseTime,
        Category::TotalMemoryUsed,
        Category::System,
        Category::Server,
        Category::ServerInfo,
        Category::NumErrors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::All => "ALL",
            Category::NumRequests => "NUM_REQUESTS",
            Category::ResponseTime => "RESPONSE_TIME",
            Category::AvgResponseTime => "AVG_RESPONSE_TIME",
            Category::TotalResponseTime => "TOTAL_RESPONSE_TIME",
            Category::TotalMemoryUsed => "TOTAL_MEMORY_USED",
            Category::System => "SYSTEM",
            Category::Server => "SERVER",
            Category::ServerInfo => "SERVER_INFO",
            Category::NumErrors => "NUM_ERRORS",
        }
    }

    /// Chapel's string-to-enum cast: the bare name or `MetricCategory.NAME`,
    /// exact case, no surrounding whitespace. Membership in the imitated
    /// release is checked separately.
    pub fn cast(s: &str) -> Option<Category> {
        let bare = s.strip_prefix("MetricCategory.").unwrap_or(s);
        Category::EVERY.into_iter().find(|c| c.name() == bare)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_releases() {
        assert_eq!(Release::parse("head"), Ok(Release::Head));
        assert_eq!(Release::parse("v2026.07.15"), Ok(Release::Head));
        assert_eq!(Release::parse("2024.04.19"), Ok(Release::V2024_04_19));
        assert_eq!(Release::parse("v2022.08.15"), Ok(Release::V2022_08_15));
        assert!(Release::parse("2023.06.16").is_err());
        assert!(Release::parse("").is_err());
        assert_eq!(Release::Head.version_string(), "v2026.07.15");
    }

    fn names(r: Release) -> Vec<&'static str> {
        r.categories().into_iter().map(Category::name).collect()
    }

    #[test]
    fn category_sets_per_release() {
        let old = vec![
            "ALL",
            "NUM_REQUESTS",
            "RESPONSE_TIME",
            "SYSTEM",
            "SERVER",
            "SERVER_INFO",
        ];
        assert_eq!(names(Release::V2022_08_15), old);
        assert_eq!(names(Release::V2022_09_30), old);
        assert_eq!(names(Release::V2022_11_10), old);
        assert_eq!(names(Release::V2022_12_09), old);
        let feb = vec![
            "ALL",
            "NUM_REQUESTS",
            "RESPONSE_TIME",
            "AVG_RESPONSE_TIME",
            "SYSTEM",
            "SERVER",
            "SERVER_INFO",
        ];
        assert_eq!(names(Release::V2023_02_08), feb);
        assert_eq!(names(Release::V2023_03_01), feb);
        let apr = vec![
            "ALL",
            "NUM_REQUESTS",
            "RESPONSE_TIME",
            "AVG_RESPONSE_TIME",
            "TOTAL_RESPONSE_TIME",
            "TOTAL_MEMORY_USED",
            "SYSTEM",
            "SERVER",
            "SERVER_INFO",
        ];
        assert_eq!(names(Release::V2023_04_07), apr);
        let mut full = apr.clone();
        full.push("NUM_ERRORS");
        assert_eq!(names(Release::V2024_04_19), full);
        assert_eq!(names(Release::V2024_10_02), full);
        assert_eq!(names(Release::V2025_07_03), full);
        assert_eq!(names(Release::V2025_09_30), full);
        assert_eq!(names(Release::Head), full);
    }

    #[test]
    fn alone_rules() {
        use Category::*;
        for r in Release::ALL {
            for c in [All, NumRequests, System, Server, ServerInfo] {
                assert!(r.can_request_alone(c), "{r} {c:?}");
            }
            assert!(!r.can_request_alone(ResponseTime), "{r}");
        }
        assert!(!Release::V2023_03_01.can_request_alone(AvgResponseTime));
        assert!(Release::V2023_04_07.can_request_alone(AvgResponseTime));
        assert!(Release::V2023_04_07.can_request_alone(TotalMemoryUsed));
        assert!(!Release::V2023_04_07.can_request_alone(NumErrors));
        assert!(Release::V2024_04_19.can_request_alone(NumErrors));
        assert!(!Release::V2022_09_30.can_request_alone(TotalResponseTime));
    }

    #[test]
    fn cast_like_chapel() {
        assert_eq!(Category::cast("ALL"), Some(Category::All));
        assert_eq!(Category::cast("MetricCategory.ALL"), Some(Category::All));
        assert_eq!(Category::cast("all"), None);
        assert_eq!(Category::cast(" ALL"), None);
        assert_eq!(Category::cast("ALL extra"), None);
        assert_eq!(Category::cast("FOO"), None);
    }
}
