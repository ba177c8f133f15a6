//! What the CRI asks of a container's log beyond writing it (which
//! berth-shim does, in the kubelet's format: see the `cri` driver in
//! [`crate::logconfig`]): `ReopenContainerLog`, after the kubelet has
//! renamed the file to rotate it.

use std::time::Duration;

use crate::Error;
use crate::engine::Engine;
use crate::store::Status;

/// How long the shim may take to answer a reopen: it answers between two
/// reads of the container's output, but a restarting container's shim
/// only between two runs (its back-off is at most a minute).
const REOPEN_TIMEOUT: Duration = Duration::from_secs(70);

impl Engine {
    /// Has the container's shim open its log file anew at the same path
    /// (the kubelet renamed the old one); returns once the new file
    /// exists. A container that is not running is an error naming it
    /// ("container ID is not running", containerd's words), and so is one
    /// whose shim is gone (nobody writes its log). A paused container's
    /// shim still writes (the CRI has no paused state): it is reopened.
    pub fn reopen_log(&self, key: &str) -> Result<(), Error> {
        let rec = self.refresh(&self.containers()?.get(key)?);
        if !matches!(rec.status, Status::Running | Status::Paused) {
            return Err(Error::NotRunning(format!("container {} is not running", rec.id)));
        }
        if !self.shim_alive(&rec.id) {
            return Err(Error::NotRunning(format!(
                "container {}: its shim is gone, nothing writes its log to reopen",
                rec.id
            )));
        }
        let mut attach = self.attach(&rec)?;
        Ok(attach.reopen_log(REOPEN_TIMEOUT)?)
    }
}
