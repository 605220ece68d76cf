//! The documents made from the settings table ([`super::KEYS`]): the reference tables of
//! `docs/configuration.md` (between its GENERATED markers) and the example file
//! `config/arkouda-push-agent.toml`. A test keeps both in step with the table;
//! `UPDATE_GENERATED=1 cargo test generated_documents` rewrites them.

use super::{env_name, Group, KeyDef, Kind, KEYS};

/// The markers around the generated part of `docs/configuration.md`.
pub const BEGIN: &str = "<!-- BEGIN GENERATED from the settings table in src/config.rs: `UPDATE_GENERATED=1 cargo test generated_documents` rewrites it -->";
pub const END: &str = "<!-- END GENERATED -->";

fn in_group(g: Group) -> impl Iterator<Item = &'static KeyDef> {
    KEYS.iter().filter(move |d| d.group == g)
}

fn code(s: &str) -> String {
    format!("`{s}`")
}

/// One table per group: key, flag, environment, default, meaning.
pub fn tables() -> String {
    let mut out = String::new();
    for g in Group::ALL {
        out.push_str(&format!("### {}\n\n{}\n\n", g.title(), g.about()));
        out.push_str("| key | flag | environment | default | meaning |\n|---|---|---|---|---|\n");
        for d in in_group(g) {
            let flag = d.flag().map_or_else(|| "none".to_string(), |f| code(&f));
            let env: Vec<String> = d.env_names().iter().map(|e| code(e)).collect();
            let default = match (d.default, d.default_note) {
                (Some(v), _) => code(v),
                (None, Some(note)) => note.to_string(),
                (None, None) => String::new(),
            };
            let meaning = if d.secret {
                format!(
                    "{} Secret: only from the environment or its `_file` key.",
                    d.doc
                )
            } else {
                d.doc.to_string()
            };
            out.push_str(&format!(
                "| {} | {flag} | {} | {default} | {meaning} |\n",
                code(d.key),
                env.join(", ")
            ));
        }
        out.push('\n');
    }
    out
}

/// A doc as plain text, for `--help` and the example file: no backticks, and a Markdown
/// link `[text](target)` as its text.
pub fn plain(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(open) = rest.find('[') {
        let link = rest[open..].find("](").and_then(|mid| {
            rest[open + mid..]
                .find(')')
                .map(|close| (mid, open + mid + close))
        });
        match link {
            Some((mid, close)) => {
                out.push_str(&rest[..open]);
                out.push_str(&rest[open + 1..open + mid]);
                rest = &rest[close + 1..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out.replace('`', "")
}

/// `text` as `# ` comment lines of at most `width` characters.
fn comment(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.chars().count() > width && line != "#" {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// A default as a TOML value of its kind.
fn toml_value(d: &KeyDef, raw: &str) -> String {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""));
    match d.kind {
        Kind::Bool | Kind::Port | Kind::Bytes | Kind::Int => raw.to_string(),
        Kind::List => {
            let items: Vec<String> = raw.split(',').map(|v| quoted(v.trim())).collect();
            format!("[{}]", items.join(", "))
        }
        Kind::Str | Kind::Path | Kind::Duration | Kind::Labels => quoted(raw),
    }
}

/// The example file: every key but the secrets, with its doc; a key with a default is set
/// to it, one without is shown commented with an example.
pub fn example_file() -> String {
    let mut out = String::new();
    out.push_str(&comment(
        "arkouda-push-agent configuration (TOML): every setting, set to its default or shown commented with an example. Made from the settings table in src/config.rs; docs/configuration.md explains each key. Precedence: default < this file < environment < flags. Secrets never go in this file: give their *_file key, or the environment.",
        92,
    ));
    for g in Group::ALL {
        out.push('\n');
        let title = format!("# --- {} ", g.title());
        out.push_str(&format!(
            "{title}{}\n",
            "-".repeat(92usize.saturating_sub(title.chars().count()))
        ));
        out.push_str(&comment(g.about(), 92));
        if g == Group::Slurm {
            out.push_str("[slurm]\n");
        }
        for d in in_group(g).filter(|d| !d.secret) {
            let name = d.key.strip_prefix("slurm.").unwrap_or(d.key);
            out.push('\n');
            let mut doc = plain(d.doc);
            if let Some(f) = d.flag() {
                doc.push_str(&format!(
                    " (Flag {f}; environment {}.)",
                    d.env_names().join(", ")
                ));
            } else {
                doc.push_str(&format!(" (Environment {}.)", env_name(d.key)));
            }
            out.push_str(&comment(&doc, 92));
            match (d.default, d.example) {
                (Some(v), _) => out.push_str(&format!("{name} = {}\n", toml_value(d, v))),
                (None, Some(ex)) => out.push_str(&format!("# {name} = {ex}\n")),
                (None, None) => out.push_str(&format!("# {name} =\n")),
            }
        }
    }
    out
}

/// `doc` with the part between the markers replaced by `generated`.
pub fn splice(doc: &str, generated: &str) -> Option<String> {
    let a = doc.find(BEGIN)? + BEGIN.len();
    let b = doc[a..].find(END)? + a;
    Some(format!("{}\n\n{}{}", &doc[..a], generated, &doc[b..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// docs/configuration.md's tables and config/arkouda-push-agent.toml are what the
    /// settings table makes of them; `UPDATE_GENERATED=1` rewrites them.
    #[test]
    fn generated_documents_are_current() {
        let update = std::env::var_os("UPDATE_GENERATED").is_some();
        let doc_path = repo("docs/configuration.md");
        let doc = std::fs::read_to_string(&doc_path).unwrap();
        let want_doc =
            splice(&doc, &tables()).expect("docs/configuration.md has the GENERATED markers");
        let example_path = repo("config/arkouda-push-agent.toml");
        let example = std::fs::read_to_string(&example_path).unwrap();
        let want_example = example_file();
        if update {
            std::fs::write(&doc_path, &want_doc).unwrap();
            std::fs::write(&example_path, &want_example).unwrap();
            return;
        }
        assert!(
            doc == want_doc,
            "docs/configuration.md is stale: UPDATE_GENERATED=1 cargo test generated_documents"
        );
        assert!(example == want_example, "config/arkouda-push-agent.toml is stale: UPDATE_GENERATED=1 cargo test generated_documents");
    }

    #[test]
    fn plain_text_of_a_doc() {
        assert_eq!(
            plain("see [How the server is found](#how-the-server-is-found) and `x` [y]"),
            "see How the server is found and x [y]"
        );
    }

    /// The example file is valid: it loads, and every key is there.
    #[test]
    fn the_example_file_loads() {
        let text = example_file();
        let path = std::env::temp_dir().join(format!("apa-example-{}.toml", std::process::id()));
        std::fs::write(&path, &text).unwrap();
        let flags = crate::config::FlagValues {
            config: Some(path.clone()),
            values: Vec::new(),
        };
        let resolved = crate::config::resolve(&flags, &Default::default());
        std::fs::remove_file(&path).unwrap();
        let resolved = resolved.unwrap();
        for d in KEYS.iter().filter(|d| !d.secret) {
            let name = d.key.strip_prefix("slurm.").unwrap_or(d.key);
            assert!(
                text.contains(&format!("\n{name} =")) || text.contains(&format!("\n# {name} =")),
                "{}",
                d.key
            );
        }
        assert!(resolved.get("slurm.select").is_some());
    }
}
