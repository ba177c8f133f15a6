use anyhow::Result;
use berth_runtime::lifecycle;

use super::Globals;

pub fn pause(g: &Globals, a: liboci_cli::Pause) -> Result<i32> {
    lifecycle::pause(&g.load(&a.container_id)?)?;
    Ok(0)
}

pub fn resume(g: &Globals, a: liboci_cli::Resume) -> Result<i32> {
    lifecycle::resume(&g.load(&a.container_id)?)?;
    Ok(0)
}
