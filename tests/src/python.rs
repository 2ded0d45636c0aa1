//! The Python Celery environment of the interop tests: a virtualenv with the pinned Celery from
//! `tests/python/requirements.txt`, made once per target directory (or `LEPUS_PYTHON`, a
//! Python that already has it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder holding the Python test programs.
#[must_use]
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// A Python interpreter with Celery installed, creating the virtualenv on first use. Concurrent
/// test processes serialize on a lock file, so it is made once.
#[must_use]
pub fn celery_python() -> PathBuf {
    if let Ok(python) = std::env::var("LEPUS_PYTHON") {
        return PathBuf::from(python);
    }
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .expect("tests run from target/<profile>/deps");
    let venv = target.join("celery-venv");
    let python = venv.join("bin").join("python");
    let requirements = python_dir().join("requirements.txt");
    let stamp = venv.join("installed-requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");

    let lock = std::fs::File::create(target.join("celery-venv.lock")).expect("lock file");
    lock.lock().expect("lock the virtualenv");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements));
        std::fs::write(&stamp, &wanted).expect("stamp");
    }
    drop(lock);
    python
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?} cannot start: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
