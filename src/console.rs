//! What the subcommands print for a person or a script (`sweep`, `delete`, `check`,
//! `once --dry-run`), written so that a reader that goes away early (`sweep | head -1`)
//! ends the output quietly: `println!` would panic on the broken pipe part-way through a
//! sweep's deletions. A write that fails stops further output to that stream; the work and
//! the exit code go on as if it had been read.
//!
//! Use [`outln!`](crate::outln) and [`errln!`](crate::errln) rather than `println!` and
//! `eprintln!` anywhere a subcommand prints.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

fn write_to(gone: &AtomicBool, w: &mut dyn Write, args: fmt::Arguments<'_>, newline: bool) {
    if gone.load(Ordering::Relaxed) {
        return;
    }
    let written = w
        .write_fmt(args)
        .and_then(|()| if newline { w.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| w.flush());
    // A closed pipe (EPIPE; SIGPIPE is ignored in Rust programs) or any other failure:
    // nobody reads this stream any more.
    if written.is_err() {
        gone.store(true, Ordering::Relaxed);
    }
}

/// One line on standard output; nothing once standard output has failed.
pub fn out(args: fmt::Arguments<'_>) {
    write_to(&STDOUT_GONE, &mut std::io::stdout().lock(), args, true);
}

/// Text on standard output without a newline (`once --dry-run`'s exposition text).
pub fn out_raw(args: fmt::Arguments<'_>) {
    write_to(&STDOUT_GONE, &mut std::io::stdout().lock(), args, false);
}

/// One line on standard error; nothing once standard error has failed.
pub fn err(args: fmt::Arguments<'_>) {
    write_to(&STDERR_GONE, &mut std::io::stderr().lock(), args, true);
}

/// Whether standard output goes to the systemd journal: systemd then sets `JOURNAL_STREAM`
/// to that stream's `device:inode` (systemd.exec(5)). A report line printed there is
/// already in the log, so a log line saying the same would be written twice.
pub fn stdout_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stdout()) {
        Ok(st) => stream == format!("{}:{}", st.st_dev, st.st_ino),
        Err(_) => false,
    }
}

/// `println!` that ends quietly on a closed pipe (see [`crate::console`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::console::out(format_args!($($arg)*)) };
}

/// `eprintln!` that ends quietly on a closed pipe (see [`crate::console`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::console::err(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn stdout_is_the_journal_only_when_journal_stream_names_it() {
        // A test's stdout is a pipe or a file, never the journal, and no JOURNAL_STREAM
        // can name it without being its own device and inode.
        let st = nix::sys::stat::fstat(std::io::stdout()).expect("fstat stdout");
        let theirs = format!("{}:{}", st.st_dev, st.st_ino + 1);
        std::env::set_var("JOURNAL_STREAM", &theirs);
        assert!(!super::stdout_is_journal());
        std::env::set_var("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino));
        assert!(super::stdout_is_journal());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!super::stdout_is_journal());
    }

    use super::*;

    /// A writer whose reader has gone: every write fails, as on EPIPE.
    struct Closed(usize);

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            self.0 += 1;
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stream_is_written_once_then_left_alone() {
        let gone = AtomicBool::new(false);
        let mut w = Closed(0);
        for i in 0..5 {
            write_to(&gone, &mut w, format_args!("line {i}"), true);
        }
        assert!(gone.load(Ordering::Relaxed));
        assert_eq!(w.0, 1, "one failed write, then none");
        let gone = AtomicBool::new(false);
        let mut buf = Vec::new();
        write_to(&gone, &mut buf, format_args!("a {}", 1), true);
        write_to(&gone, &mut buf, format_args!("b"), false);
        assert_eq!(buf, b"a 1\nb");
        assert!(!gone.load(Ordering::Relaxed));
    }
}
