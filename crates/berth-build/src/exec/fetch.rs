//! ADD from a URL: one GET into a file of the step's work directory,
//! hashed as it arrives and checked against `--checksum` when given. The
//! file is added as it is (never unpacked, as docker), mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};

/// Whether an ADD source is a URL berth fetches.
pub fn is_url(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

/// The file name a URL gives (its last path segment), as docker names it.
pub fn file_name(url: &str) -> Result<String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Error::Invalid(format!("ADD {url}: {e}")))?;
    let name = parsed.path_segments().and_then(|mut s| s.next_back()).unwrap_or("").to_string();
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::Invalid(format!(
            "ADD {url}: cannot determine a file name from the URL; give a destination file"
        )));
    }
    Ok(name)
}

/// Downloads `url` to `dir/NAME`; its sha256 (`sha256:HEX`).
pub fn fetch(url: &str, dir: &Path, checksum: Option<&str>) -> Result<(PathBuf, String)> {
    let name = file_name(url)?;
    let path = dir.join(&name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io { context: "start a runtime for ADD".into(), source: e })?;
    let digest = rt.block_on(get(url, &path))?;
    if let Some(want) = checksum
        && want != digest
    {
        return Err(Error::Invalid(format!("ADD {url}: digest mismatch {digest}: expected {want}")));
    }
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).ctx("chmod", &path)?;
    Ok((path, digest))
}

async fn get(url: &str, path: &Path) -> Result<String> {
    let failed = |e: reqwest::Error| Error::Invalid(format!("ADD {url}: {e}"));
    let mut resp = reqwest::get(url).await.map_err(failed)?;
    if !resp.status().is_success() {
        return Err(Error::Invalid(format!("ADD {url}: invalid response status {}", resp.status())));
    }
    let mut f = std::fs::File::create(path).ctx("create", path)?;
    let mut h = Sha256::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        h.update(&chunk);
        f.write_all(&chunk).ctx("write", path)?;
    }
    f.sync_all().ctx("fsync", path)?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
