//! Errors as dockerd sends them: a status code and `{"message": ...}`, so
//! the docker CLI and the SDKs print the words (and exit with the codes)
//! their users know.

use berth_engine::Error as E;
use berth_engine::store::StoreError;
use hyper::StatusCode;

/// One failed request: the status and dockerd's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    /// 400: a parameter the request got wrong.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The JSON body dockerd sends.
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.message }).to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl From<berth_image::Error> for ApiError {
    fn from(e: berth_image::Error) -> ApiError {
        use berth_image::Error as I;
        match &e {
            I::NotFound(what) => ApiError::not_found(format!("No such image: {what}")),
            I::Conflict(_) => ApiError::conflict(e.to_string()),
            I::InvalidReference { .. } | I::InvalidDigest(_) | I::InvalidPlatform(_) => ApiError::bad(e.to_string()),
            I::Registry { status: 404, .. } | I::NoPlatform { .. } => ApiError::not_found(e.to_string()),
            I::Registry { status: 401 | 403, .. } | I::Auth { .. } => {
                ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// The engine's failures with dockerd's codes: 404 for what does not
/// exist, 409 for names in use and containers in the wrong state, 400 for
/// bad parameters, 500 for the rest.
impl From<E> for ApiError {
    fn from(e: E) -> ApiError {
        if e.exec_failure().is_some() {
            // dockerd: 400 "failed to create task for container: ... exec: ...";
            // the CLI reads 126/127 from the words.
            return ApiError::bad(e.to_string());
        }
        match e {
            E::Store(StoreError::NotFound(_)) => ApiError::not_found(e.to_string()),
            E::Store(StoreError::NameInUse { name, id }) => ApiError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to \
                 remove (or rename) that container to be able to reuse that name."
            )),
            E::Store(StoreError::BadName(name)) => {
                ApiError::bad(format!("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"))
            }
            E::Store(StoreError::Ambiguous(key)) => {
                ApiError::bad(format!("Multiple IDs found with provided prefix: {key}"))
            }
            E::NoSuchImage(name) => ApiError::not_found(format!("No such image: {name}")),
            E::Image(i) => i.into(),
            E::Running(_) | E::NotRunning(_) | E::Defunct(_) | E::AlreadyRunning(_) => {
                ApiError::conflict(e.to_string())
            }
            E::Spec(_) | E::LogConfig(_) | E::PullPolicy(_) | E::NetworkMode(_) | E::Change { .. } => {
                ApiError::bad(e.to_string())
            }
            E::Network(berth_engine::network::NetworkError::BadPort { .. }) => ApiError::bad(e.to_string()),
            E::Network(berth_engine::network::NetworkError::NotFound(_)) => ApiError::not_found(e.to_string()),
            E::Endpoint(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            E::BadAlias(_) => ApiError::bad(e.to_string()),
            E::Volume(_) => ApiError::bad(e.to_string()),
            e => ApiError::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_get_dockerds_codes_and_words() {
        let e: ApiError = E::Store(StoreError::NotFound("nosuch".into())).into();
        assert_eq!((e.status, e.message.as_str()), (StatusCode::NOT_FOUND, "No such container: nosuch"));
        let e: ApiError = E::Store(StoreError::NameInUse { name: "web".into(), id: "abc".into() }).into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e.message.starts_with("Conflict. The container name \"/web\" is already in use by container \"abc\""));
        let e: ApiError = E::Running("web".into()).into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e: ApiError = E::NoSuchImage("x:1".into()).into();
        assert_eq!((e.status, e.message.as_str()), (StatusCode::NOT_FOUND, "No such image: x:1"));
        assert_eq!(ApiError::bad("b").body(), r#"{"message":"b"}"#);
    }
}
