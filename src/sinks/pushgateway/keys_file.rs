//! The keys file (`keys_file`): the grouping keys of every group the agent may have
//! pushed, one a line, so that the Slurm Epilog deletes exactly those groups without
//! listing the Pushgateway. Written by the Pushgateway sink, read by the Epilog.

use super::GroupingKey;

/// The most of a keys file the Epilog reads (some 10,000 groups).
pub const KEYS_FILE_LIMIT: u64 = 4 << 20;

/// Records `keys` in `path` (`keys_file`), one grouping key a line as a JSON array of
/// `[name, value]` pairs, replacing what was there. The agent calls this with every group
/// it may have pushed, before pushing a new one; the Slurm Epilog reads it back
/// ([`read_keys`]) and deletes exactly those groups, never listing the Pushgateway.
///
/// Written in place (truncate, write), never renamed: under systemd the file is the only
/// part of the state directory the agent may write to (a bind mount the Prolog made).
pub fn record_keys(path: &std::path::Path, keys: &[GroupingKey]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::new();
    for k in keys {
        text.push_str(&serde_json::to_string(k.pairs()).unwrap_or_default());
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// The keys of a keys file (at most [`KEYS_FILE_LIMIT`] bytes; unreadable lines, such as
/// a last line cut short by SIGKILL, are skipped). Never follows a symlink.
pub fn read_keys(path: &std::path::Path) -> std::io::Result<Vec<GroupingKey>> {
    let text = crate::text::read_plain_file(path, KEYS_FILE_LIMIT)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Vec<(String, String)>>(l).ok())
        .filter_map(|pairs| {
            let job = pairs.iter().find(|(k, _)| k == "job")?.1.clone();
            Some(GroupingKey::new(&job, pairs))
        })
        .collect())
}
