//! Shared CLI plumbing: logging, progress bars, output helpers.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What every command may need from the global flags.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// `-q`: no progress bars, errors only.
    pub quiet: bool,
}

/// Sets up `tracing` on standard error; `RUST_LOG` overrides the level chosen by `-v`/`-q`.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,unlearnrec_core=debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// The directory a file path lives in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Checks, before any heavy work, that `path` (given by `flag`) can be written as a file: it is not a
/// directory, its directory exists, and a file can be created there.
pub fn check_out_file(path: &Path, flag: &str) -> anyhow::Result<()> {
    let shown = path.display();
    if path.is_dir() || path.as_os_str().to_string_lossy().ends_with(std::path::MAIN_SEPARATOR) {
        bail!("{flag} {shown} is a directory; give a file name");
    }
    let dir = parent_dir(path);
    if !dir.exists() {
        bail!("{flag} {shown}: directory {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("{flag} {shown}: {} is not a directory", dir.display());
    }
    unlearnrec_core::data::temp_file_in(dir)
        .with_context(|| format!("{flag} {shown}: cannot write in {}", dir.display()))?;
    Ok(())
}

/// Checks, before any heavy work, that `dir` (given by `flag`) can be an output directory: it is not a file,
/// and the nearest existing ancestor is a directory files can be created in.
pub fn check_out_dir(dir: &Path, flag: &str) -> anyhow::Result<()> {
    let shown = dir.display();
    if dir.exists() && !dir.is_dir() {
        bail!("{flag} {shown} is a file, expected a directory");
    }
    let mut existing = dir;
    while !existing.exists() {
        existing = parent_dir(existing);
    }
    if !existing.is_dir() {
        bail!("{flag} {shown}: {} is not a directory", existing.display());
    }
    unlearnrec_core::data::temp_file_in(existing)
        .with_context(|| format!("{flag} {shown}: cannot write in {}", existing.display()))?;
    Ok(())
}

/// Outputs that belong together (a checkpoint and its receipt, a dataset and its request), written to
/// temporaries next to their destinations and moved into place only when all of them are complete. Dropped
/// without [`Staged::commit`], it removes the temporaries and leaves the destinations untouched.
#[derive(Default)]
pub struct Staged {
    files: Vec<(tempfile::TempPath, PathBuf)>,
    dirs: Vec<(tempfile::TempDir, PathBuf)>,
}

impl Staged {
    /// A temporary file to write `dest`'s content to (any writer that replaces the file at a path works).
    pub fn file(&mut self, dest: &Path) -> anyhow::Result<PathBuf> {
        let dir = parent_dir(dest);
        let tmp = unlearnrec_core::data::temp_file_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?
            .into_temp_path();
        let path = tmp.to_path_buf();
        self.files.push((tmp, dest.to_path_buf()));
        Ok(path)
    }

    /// A temporary directory whose files will be moved into `dest` (created when missing).
    pub fn dir(&mut self, dest: &Path) -> anyhow::Result<PathBuf> {
        let mut existing = dest;
        while !existing.exists() {
            existing = parent_dir(existing);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".unlearnrec-")
            .tempdir_in(existing)
            .with_context(|| format!("creating a temporary directory in {}", existing.display()))?;
        let path = tmp.path().to_path_buf();
        self.dirs.push((tmp, dest.to_path_buf()));
        Ok(path)
    }

    /// Moves every staged output into place: directories' files first, then the files in reverse order of
    /// staging, so that the first one staged (the primary output, e.g. the checkpoint) lands last.
    pub fn commit(mut self) -> anyhow::Result<()> {
        for (tmp, dest) in self.dirs.drain(..) {
            std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
            for entry in std::fs::read_dir(tmp.path()).with_context(|| format!("reading {}", tmp.path().display()))? {
                let entry = entry?;
                let to = dest.join(entry.file_name());
                std::fs::rename(entry.path(), &to).with_context(|| format!("writing {}", to.display()))?;
            }
        }
        while let Some((tmp, dest)) = self.files.pop() {
            tmp.persist(&dest).map_err(|e| e.error).with_context(|| format!("writing {}", dest.display()))?;
        }
        Ok(())
    }
}

/// The error and its causes on one line, each thing said once.
///
/// Library errors embed their cause in their own message (`path: No such file…`) and also expose it as
/// `source()`, and the CLI's context often names the same path (`loading X`): printing the chain verbatim
/// says the path and the cause twice. A cause already contained in what was said is skipped, and a message
/// that starts with the path the previous context ended with drops that prefix.
pub fn render_error(err: &anyhow::Error) -> String {
    let mut said = String::new();
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || said.contains(&text) {
            continue;
        }
        said.push_str(&text);
        said.push('\n');
        let mut shown = text.as_str();
        if let Some(last) = parts.last().and_then(|p| p.rsplit(' ').next()) {
            // `X: cause` after a context ending in X; not `X:12: cause`, whose line number must stay.
            let prefix = format!("{last}: ");
            if let Some(rest) = shown.strip_prefix(prefix.as_str()) {
                shown = rest;
            }
        }
        parts.push(shown.to_string());
    }
    parts.join(": ")
}

/// `n noun` with the noun in the plural unless `n` is 1 (`1 user`, `62 items`).
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// Prints a JSON value on standard output.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::render_error;
    use anyhow::Context;

    #[test]
    fn render_error_says_the_path_and_the_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let lib = unlearnrec_core::Error::io("nope.safetensors", io);
        let err = Err::<(), _>(lib).context("loading nope.safetensors").unwrap_err();
        assert_eq!(render_error(&err), "loading nope.safetensors: No such file or directory (os error 2)");
    }

    #[test]
    fn render_error_keeps_a_line_number_after_the_path() {
        let lib = unlearnrec_core::Error::format("data/train.txt", 2, "expected 20 columns, found 21");
        let err = Err::<(), _>(lib).context("loading dataset data/train.txt").unwrap_err();
        assert_eq!(
            render_error(&err),
            "loading dataset data/train.txt: data/train.txt:2: expected 20 columns, found 21"
        );
    }

    #[test]
    fn render_error_keeps_distinct_causes() {
        let err = anyhow::anyhow!("inner cause").context("middle").context("outer");
        assert_eq!(render_error(&err), "outer: middle: inner cause");
    }
}

#[cfg(test)]
mod count_tests {
    #[test]
    fn count_uses_the_singular_for_one_only() {
        assert_eq!(super::count(1, "user"), "1 user");
        assert_eq!(super::count(0, "item"), "0 items");
        assert_eq!(super::count(62, "item"), "62 items");
    }
}

/// Returns the memory mimalloc keeps from freed buffers to the system. Training frees and reallocates
/// table-sized buffers at every step and mimalloc holds freed pages for reuse (the reason it is the
/// allocator); before a validation pass, whose buffers are the run's largest, holding them only raises the
/// peak (yelp d = 128: docs/benchmarks.md).
pub fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
