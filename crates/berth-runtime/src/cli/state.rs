use std::io::Write;

use anyhow::Result;

use super::Globals;

/// Prints the state as runc does: indented JSON without a trailing newline.
pub fn run(g: &Globals, a: liboci_cli::State) -> Result<i32> {
    let c = g.load(&a.container_id)?;
    let state = c.oci_state(c.status());
    let mut out = std::io::stdout().lock();
    out.write_all(state.to_pretty_json().as_bytes())?;
    out.flush()?;
    Ok(0)
}
