//! The CRI ImageService, on the engine's image operations
//! (`berth_engine::images`): berthd has no image logic of its own, so an
//! image pulled by berthd or by the `berth` CLI on the same root is seen
//! by both. Kubernetes' images are not kept apart: `berth images` lists
//! them too, as `ctr images ls` lists every namespace's in containerd.
//!
//! The engine's image calls block (the store's database, and a pull runs
//! its own async runtime), so each runs on tokio's blocking pool.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use berth_cri_api::v1;
use berth_engine::Error as EngineError;
use berth_engine::images::{Credentials, ImageDetail, ImageSettings, Images, PullRequest, no_events};
use berth_image::registry::credentials::IDENTITY_TOKEN_USER;
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::runtime::Daemon;

pub struct ImageService {
    images: Arc<Images>,
}

impl ImageService {
    /// The image operations on the daemon's root, with its `[registry]`.
    pub fn new(daemon: &Daemon) -> ImageService {
        let runtime = daemon.handlers.iter().find(|h| h.name == daemon.config.default_runtime).map(|h| h.path.clone());
        let engine = berth_engine::engine::Engine {
            root: daemon.root.clone(),
            runroot: daemon.runroot.clone(),
            // Image operations start no container: no shim is needed.
            runtime: runtime.unwrap_or_default(),
            shim: Default::default(),
            cli: None,
            cgroup_parent: daemon.cgroup_parent.clone(),
        };
        let images = engine.images(daemon.config.registry.clone(), ImageSettings::default());
        ImageService { images: Arc::new(images) }
    }

    /// Runs `f` on the blocking pool with the image operations.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Images) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let images = self.images.clone();
        tokio::task::spawn_blocking(move || f(&images))
            .await
            .map_err(|e| Status::internal(format!("image operation failed: {e}")))?
    }
}

/// The image an `ImageSpec` names; an empty one is refused, naming `what`.
fn image_name(spec: Option<v1::ImageSpec>, what: &str) -> Result<String, Status> {
    match spec.map(|s| s.image) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Status::invalid_argument(format!("{what}: no image given (ImageSpec.image is empty)"))),
    }
}

/// The credentials of a PullImage's AuthConfig, if it has any, and the
/// servers they are for (its server_address, else the image's registry).
fn credentials(auth: Option<v1::AuthConfig>) -> Result<Option<(Credentials, Vec<String>)>, Status> {
    let Some(a) = auth else { return Ok(None) };
    let servers: Vec<String> = Some(a.server_address).filter(|s| !s.is_empty()).into_iter().collect();
    let creds = if !a.identity_token.is_empty() {
        Credentials { username: IDENTITY_TOKEN_USER.into(), password: a.identity_token }
    } else if !a.registry_token.is_empty() {
        return Err(Status::unimplemented(
            "AuthConfig.registry_token (a bearer token for the registry) is not supported by berthd: \
             give username and password, auth or identity_token",
        ));
    } else if !a.auth.is_empty() {
        let bad = |why: &str| Status::invalid_argument(format!("AuthConfig.auth: {why}"));
        let raw = B64.decode(a.auth.trim()).map_err(|e| bad(&format!("not base64: {e}")))?;
        let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8 once decoded"))?;
        let (user, pass) = text.split_once(':').ok_or_else(|| bad("not base64 of USER:PASSWORD"))?;
        Credentials { username: user.into(), password: pass.into() }
    } else if !a.username.is_empty() {
        Credentials { username: a.username, password: a.password }
    } else {
        return Ok(None);
    };
    Ok(Some((creds, servers)))
}

/// The gRPC status of an engine error, with the engine's message after
/// `context` (as containerd's codes: a missing image or manifest is
/// NotFound, a bad name InvalidArgument, refused credentials
/// Unauthenticated or PermissionDenied, an image in use FailedPrecondition).
fn status(context: &str, e: EngineError) -> Status {
    use berth_image::Error as I;
    let msg = format!("{context}: {e}");
    match &e {
        EngineError::NoSuchImage(_) => Status::not_found(msg),
        EngineError::Login { .. } => Status::unauthenticated(msg),
        EngineError::PullPolicy(_) => Status::invalid_argument(msg),
        EngineError::Image(i) => match i {
            I::InvalidReference { .. } | I::InvalidDigest(_) | I::InvalidPlatform(_) => Status::invalid_argument(msg),
            I::NotFound(_) | I::NoPlatform { .. } | I::Registry { status: 404, .. } => Status::not_found(msg),
            I::Auth { .. } | I::Registry { status: 401, .. } => Status::unauthenticated(msg),
            I::Registry { status: 403, .. } => Status::permission_denied(msg),
            I::Conflict(_) => Status::failed_precondition(msg),
            I::Http { .. } => Status::unavailable(msg),
            _ => Status::unknown(msg),
        },
        _ => Status::unknown(msg),
    }
}

/// The CRI's `Image` of an engine image.
fn cri_image(d: &ImageDetail) -> v1::Image {
    let id = d.record.id.to_string();
    // As containerd: a numeric user is the uid, anything else a name.
    let user = d.user().split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(value) => (Some(v1::Int64Value { value }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    v1::Image {
        repo_tags: d.tags.clone(),
        repo_digests: d.digests.clone(),
        size: d.record.size,
        uid,
        username,
        spec: Some(v1::ImageSpec { image: id.clone(), ..Default::default() }),
        pinned: false,
        id,
    }
}

/// `ImageStatus`'s verbose info: containerd's `{"chainID", "imageSpec"}`.
fn verbose_info(d: &ImageDetail) -> Result<HashMap<String, String>, Status> {
    let info = json!({
        "chainID": d.chain_id().map(|c| c.to_string()).unwrap_or_default(),
        "imageSpec": d.config,
    });
    let text = serde_json::to_string(&info).map_err(|e| Status::internal(format!("image info: {e}")))?;
    Ok(HashMap::from([("info".to_string(), text)]))
}

/// One filesystem of `ImageFsInfo`.
fn fs_usage(u: &berth_engine::images::FsUsage, timestamp: i64) -> v1::FilesystemUsage {
    v1::FilesystemUsage {
        timestamp,
        fs_id: Some(v1::FilesystemIdentifier { mountpoint: u.path.display().to_string() }),
        used_bytes: Some(v1::UInt64Value { value: u.used_bytes }),
        inodes_used: Some(v1::UInt64Value { value: u.inodes }),
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl v1::image_service_server::ImageService for ImageService {
    async fn pull_image(&self, req: Request<v1::PullImageRequest>) -> Result<Response<v1::PullImageResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image, "PullImage")?;
        let creds = credentials(req.auth)?;
        // The pod's config only says whom the pull is for.
        let pod = req.sandbox_config.and_then(|c| c.metadata).map(|m| format!("{}/{}", m.namespace, m.name));
        tracing::info!(image = %name, pod = pod.as_deref().unwrap_or(""), "PullImage");
        let image_ref = self
            .blocking(move |images| {
                let pulled = match &creds {
                    Some((c, servers)) => {
                        images.pull_with_credentials(&name, &PullRequest::default(), c, servers, no_events())
                    }
                    None => images.pull(&name, &PullRequest::default(), no_events()),
                };
                pulled.map(|p| p.id.to_string()).map_err(|e| status(&format!("pull image {name:?}"), e))
            })
            .await?;
        Ok(Response::new(v1::PullImageResponse { image_ref }))
    }

    async fn list_images(
        &self,
        req: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        let filter = req.into_inner().filter.and_then(|f| f.image).map(|s| s.image).filter(|s| !s.is_empty());
        let images = self
            .blocking(move |images| {
                let found = match &filter {
                    Some(f) => images.detail(f).map(|d| d.into_iter().collect()),
                    None => images.details(),
                };
                found.map_err(|e| status("list images", e))
            })
            .await?;
        Ok(Response::new(v1::ListImagesResponse { images: images.iter().map(cri_image).collect() }))
    }

    async fn image_status(
        &self,
        req: Request<v1::ImageStatusRequest>,
    ) -> Result<Response<v1::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image, "ImageStatus")?;
        let found = self
            .blocking(move |images| images.detail(&name).map_err(|e| status(&format!("image status {name:?}"), e)))
            .await?;
        // The CRI: an image that is not there is an empty answer, not an error.
        let Some(d) = found else { return Ok(Response::new(v1::ImageStatusResponse::default())) };
        let info = if req.verbose { verbose_info(&d)? } else { HashMap::new() };
        Ok(Response::new(v1::ImageStatusResponse { image: Some(cri_image(&d)), info }))
    }

    async fn remove_image(
        &self,
        req: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        let name = image_name(req.into_inner().image, "RemoveImage")?;
        self.blocking(move |images| {
            // The CRI: removing an image that is not there succeeds.
            match images.remove_with_all_names(&name) {
                Ok(Some(removed)) => tracing::info!(image = %name, ?removed, "RemoveImage"),
                Ok(None) => tracing::debug!(image = %name, "RemoveImage: no such image"),
                Err(e) => return Err(status(&format!("remove image {name:?}"), e)),
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(v1::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<v1::ImageFsInfoRequest>,
    ) -> Result<Response<v1::ImageFsInfoResponse>, Status> {
        let usage = self.blocking(|images| images.store_usage().map_err(|e| status("image filesystem", e))).await?;
        let now = now_nanos();
        Ok(Response::new(v1::ImageFsInfoResponse {
            image_filesystems: vec![fs_usage(&usage.images, now)],
            container_filesystems: vec![fs_usage(&usage.containers, now)],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(f: impl FnOnce(&mut v1::AuthConfig)) -> v1::AuthConfig {
        let mut a = v1::AuthConfig::default();
        f(&mut a);
        a
    }

    #[test]
    fn auth_configs_become_credentials_for_their_server() {
        let (c, servers) = credentials(Some(auth(|a| {
            a.username = "bob".into();
            a.password = "pw".into();
        })))
        .unwrap()
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("bob", "pw"));
        assert!(servers.is_empty());
        let (c, servers) = credentials(Some(auth(|a| {
            a.auth = B64.encode("alice:s:e:c");
            a.server_address = "reg.test:5000".into();
        })))
        .unwrap()
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("alice", "s:e:c"));
        assert_eq!(servers, ["reg.test:5000"]);
        let (c, _) = credentials(Some(auth(|a| a.identity_token = "refresh".into()))).unwrap().unwrap();
        assert_eq!(c.identity_token(), Some("refresh"));
        assert!(credentials(Some(v1::AuthConfig::default())).unwrap().is_none());
        assert!(credentials(None).unwrap().is_none());
    }

    #[test]
    fn bad_auth_configs_say_what_is_wrong() {
        let err = credentials(Some(auth(|a| a.auth = "%%%".into()))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("AuthConfig.auth: not base64"), "{err:?}");
        let err = credentials(Some(auth(|a| a.auth = B64.encode("no-colon")))).unwrap_err();
        assert!(err.message().contains("USER:PASSWORD"), "{err:?}");
        let err = credentials(Some(auth(|a| a.registry_token = "t".into()))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        assert!(err.message().contains("registry_token"), "{err:?}");
    }
}
