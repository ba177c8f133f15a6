//! `berth import`: a root filesystem tarball (plain or gzip, a file or
//! stdin) as a one-layer image, as `docker import` makes one, with
//! `--change` for the Dockerfile instructions docker allows there. The
//! image is written as a docker-archive in a temporary directory and
//! loaded through berth-image's `load`, so it goes through the same
//! digest checks and safe unpack as any other image.

use std::io::{Read, Write};

use anyhow::{Context, Result, bail};
use berth_image::Reference;
use berth_image::store::Store;
use berth_image::unpack::UnpackOptions;
use clap::Args;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE
    #[arg(short, long)]
    change: Vec<String>,
    /// A commit message for the image's history
    #[arg(short, long)]
    message: Option<String>,
    /// The tarball ("-" for stdin)
    file: String,
    /// The new image's name[:tag]
    reference: Option<String>,
}

pub fn import(store: &Store, max_layer_size: u64, a: ImportArgs) -> Result<()> {
    let mut config = json!({});
    for c in &a.change {
        apply_change(&mut config, c)?;
    }
    // Held until the image is loaded: GC leaves the directory alone while
    // this runs, and removes it if this is killed.
    let guard = store.adding()?;
    let dir = store.temp_dir("import-", &guard)?;
    let input: Box<dyn Read> = if a.file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file))?)
    };
    let diff_id = write_layer(input, &dir.path().join("layer.tar"))?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let comment = a.message.unwrap_or_else(|| format!("Imported from {}", a.file));
    let image = json!({
        "architecture": berth_image::Platform::host().architecture,
        "os": "linux",
        "created": now,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": now, "comment": comment }],
    });
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&image)?)?;
    let tags: Vec<String> = match &a.reference {
        Some(r) => vec![Reference::parse(r).with_context(|| format!("{r:?} is not an image reference"))?.to_string()],
        None => Vec::new(),
    };
    let manifest = json!([{ "Config": "config.json", "RepoTags": tags, "Layers": ["layer.tar"] }]);
    std::fs::write(dir.path().join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    let loaded = berth_image::archive::load(store, dir.path(), &UnpackOptions { max_size: max_layer_size })?;
    for (rec, _) in loaded {
        println!("{}", rec.id);
    }
    Ok(())
}

/// Copies the tarball (gunzipped if it is gzip) to `dest`; the digest of
/// the plain tar, which is the layer's diff ID.
fn write_layer(mut input: impl Read, dest: &std::path::Path) -> Result<String> {
    let mut head = [0u8; 2];
    let n = read_up_to(&mut input, &mut head)?;
    let chained = std::io::Cursor::new(head[..n].to_vec()).chain(input);
    let mut reader: Box<dyn Read> =
        if head[..n] == [0x1f, 0x8b] { Box::new(flate2::read::GzDecoder::new(chained)) } else { Box::new(chained) };
    let mut out = std::fs::File::create(dest).with_context(|| format!("create {}", dest.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).context("read the tarball")?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    if total == 0 {
        bail!("the tarball is empty");
    }
    Ok(format!("sha256:{}", hex::encode(hash.finalize())))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).context("read the tarball")? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One `--change` instruction into the image config.
fn apply_change(config: &mut Value, change: &str) -> Result<()> {
    let (op, rest) = change.trim().split_once(char::is_whitespace).unwrap_or((change.trim(), ""));
    let rest = rest.trim();
    // JSON form (`CMD ["sh"]`) or shell form (`CMD echo hi` runs `/bin/sh -c`).
    let argv = || -> Result<Value> {
        if rest.starts_with('[') {
            let v: Vec<String> =
                serde_json::from_str(rest).with_context(|| format!("--change {change:?}: bad JSON"))?;
            Ok(json!(v))
        } else {
            Ok(json!(["/bin/sh", "-c", rest]))
        }
    };
    match op.to_ascii_uppercase().as_str() {
        "CMD" => config["Cmd"] = argv()?,
        "ENTRYPOINT" => config["Entrypoint"] = argv()?,
        "WORKDIR" => config["WorkingDir"] = json!(rest),
        "USER" => config["User"] = json!(rest),
        "ENV" => {
            let kv = match rest.split_once('=') {
                Some((k, v)) => format!("{}={}", k.trim(), v.trim().trim_matches('"')),
                None => match rest.split_once(char::is_whitespace) {
                    Some((k, v)) => format!("{k}={}", v.trim()),
                    None => bail!("--change {change:?}: ENV needs KEY=VALUE"),
                },
            };
            let key = kv.split('=').next().unwrap_or_default().to_owned();
            let env = config["Env"].as_array().cloned().unwrap_or_default();
            let mut env: Vec<Value> =
                env.into_iter().filter(|e| e.as_str().is_none_or(|s| !s.starts_with(&format!("{key}=")))).collect();
            env.push(json!(kv));
            config["Env"] = json!(env);
        }
        "LABEL" => {
            let (k, v) = rest.split_once('=').with_context(|| format!("--change {change:?}: LABEL needs KEY=VALUE"))?;
            config["Labels"][k.trim()] = json!(v.trim().trim_matches('"'));
        }
        "EXPOSE" => {
            for p in rest.split_whitespace() {
                let p = if p.contains('/') { p.to_owned() } else { format!("{p}/tcp") };
                config["ExposedPorts"][p] = json!({});
            }
        }
        other => bail!(
            "--change: {other:?} cannot be applied on import (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE)"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_image_config() {
        let mut c = json!({});
        apply_change(&mut c, r#"CMD ["sh", "-c", "echo hi"]"#).unwrap();
        apply_change(&mut c, "ENTRYPOINT /init").unwrap();
        apply_change(&mut c, "ENV PATH=/bin").unwrap();
        apply_change(&mut c, "ENV PATH=/usr/bin:/bin").unwrap();
        apply_change(&mut c, "WORKDIR /srv").unwrap();
        apply_change(&mut c, "EXPOSE 80 53/udp").unwrap();
        assert_eq!(c["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/init"]));
        assert_eq!(c["Env"], json!(["PATH=/usr/bin:/bin"]), "a later ENV replaces the key");
        assert_eq!(c["WorkingDir"], "/srv");
        assert!(c["ExposedPorts"]["80/tcp"].is_object() && c["ExposedPorts"]["53/udp"].is_object());
        assert!(apply_change(&mut c, "RUN make").is_err());
    }

    #[test]
    fn the_diff_id_is_the_plain_tars_digest_also_when_gzipped() {
        let dir = tempfile::tempdir().unwrap();
        let tar = b"not really a tar but bytes".repeat(100);
        let plain = write_layer(&tar[..], &dir.path().join("a")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let zipped = write_layer(&gz.finish().unwrap()[..], &dir.path().join("b")).unwrap();
        assert_eq!(plain, zipped);
        assert_eq!(plain, format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
        assert!(write_layer(&b""[..], &dir.path().join("c")).is_err());
    }
}
