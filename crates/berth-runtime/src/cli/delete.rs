use anyhow::Result;
use berth_runtime::lifecycle;

use super::Globals;

pub fn run(g: &Globals, a: liboci_cli::Delete) -> Result<i32> {
    lifecycle::delete(&g.root, &a.container_id, a.force)?;
    Ok(0)
}
