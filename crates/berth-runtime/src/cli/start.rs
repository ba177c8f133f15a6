use anyhow::Result;
use berth_runtime::lifecycle;

use super::Globals;

pub fn run(g: &Globals, a: liboci_cli::Start) -> Result<i32> {
    let c = g.load(&a.container_id)?;
    lifecycle::start(&c)?;
    Ok(0)
}
