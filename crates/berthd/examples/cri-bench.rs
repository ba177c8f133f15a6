//! One pod lifecycle on a CRI server through one kept gRPC connection, as
//! the kubelet drives a runtime (bench/cri.sh runs it beside crictl, which
//! starts a process and dials anew for every call): prints the
//! milliseconds of RunPodSandbox, CreateContainer + StartContainer and
//! StopPodSandbox + RemovePodSandbox, timed around the calls alone.
//!
//!   cri-bench ENDPOINT NAME LOG_DIR CGROUP_PARENT IMAGE

use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth_cri_api::v1;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, name, log_dir, cgroup_parent, image] = args.as_slice() else {
        bail!("usage: cri-bench ENDPOINT NAME LOG_DIR CGROUP_PARENT IMAGE");
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let times = rt.block_on(lifecycle(endpoint, name, log_dir, cgroup_parent, image))?;
    println!("{:.1} {:.1} {:.1}", times[0], times[1], times[2]);
    Ok(())
}

async fn lifecycle(endpoint: &str, name: &str, log_dir: &str, cgroup_parent: &str, image: &str) -> Result<[f64; 3]> {
    let mut c = berth_cri_api::runtime_client(endpoint).await.with_context(|| format!("connect to {endpoint}"))?;
    // The connection is up before anything is timed (a kubelet's is).
    c.version(v1::VersionRequest::default()).await?;
    let pod_config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            namespace: "bench".into(),
            uid: format!("{name}-uid"),
            attempt: 0,
        }),
        log_directory: log_dir.into(),
        linux: Some(v1::LinuxPodSandboxConfig { cgroup_parent: cgroup_parent.into(), ..Default::default() }),
        ..Default::default()
    };
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;

    let t = Instant::now();
    let pod = c
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(pod_config.clone()), ..Default::default() })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    let pod_ms = ms(t);

    let config = v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: "sleeper".into(), attempt: 0 }),
        image: Some(v1::ImageSpec { image: image.into(), ..Default::default() }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "sleeper.log".into(),
        linux: Some(v1::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let t = Instant::now();
    let ctr = c
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_config),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    c.start_container(v1::StartContainerRequest { container_id: ctr }).await.context("StartContainer")?;
    let ctr_ms = ms(t);

    let t = Instant::now();
    c.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.context("StopPodSandbox")?;
    c.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.context("RemovePodSandbox")?;
    Ok([pod_ms, ctr_ms, ms(t)])
}
