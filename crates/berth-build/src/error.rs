//! The executor's errors: each names the instruction (file and line) or
//! the path it was working on, in docker's words where users match them.

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A RUN whose process failed: docker's (BuildKit's) message.
    #[error("process \"{command}\" did not complete successfully: exit code: {code}")]
    Process { command: String, code: i32 },
    /// An instruction that cannot be carried out as written.
    #[error("{file}:{line}: {instruction}: {message}")]
    Step { file: String, line: usize, instruction: String, message: String },
    /// Bad build input outside the Dockerfile (flags, context).
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("OCI runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    #[error(transparent)]
    Engine(#[from] berth_engine::Error),
    #[error(transparent)]
    Spec(#[from] berth_engine::spec::SpecError),
    #[error(transparent)]
    Copy(#[from] berth_fs::copy::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to an io::Error.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io { context: format!("{what} {}", path.display()), source })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::Io { context: format!("{what} {}", path.display()), source: e.into() })
    }
}
