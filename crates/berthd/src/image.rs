//! The CRI ImageService: every RPC answers UNIMPLEMENTED until image
//! operations move into the engine (the CLI and berthd must share one
//! image behaviour, so berthd does not reach the image store on its own).

use berth_cri_api::v1;
use tonic::{Request, Response, Status};

use crate::not_yet;

pub struct ImageService;

crate::cri_service! {
    impl v1::image_service_server::ImageService for ImageService {}
    not_yet {
        "ListImages" list_images(ListImagesRequest) -> ListImagesResponse;
        "ImageStatus" image_status(ImageStatusRequest) -> ImageStatusResponse;
        "PullImage" pull_image(PullImageRequest) -> PullImageResponse;
        "RemoveImage" remove_image(RemoveImageRequest) -> RemoveImageResponse;
        "ImageFsInfo" image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
    }
}
