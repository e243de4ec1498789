"""The built-in SageMaker XGBoost image for each region.

The SageMaker SDK resolves this from its `image_uri_config/xgboost.json`, but the SDK is too
large to ship in a Lambda layer, so the registry accounts of the `sagemaker-xgboost`
repository (the same for 1.0-1 through 1.7-1) are kept here.
"""

from __future__ import annotations

XGBOOST_VERSION = "1.7-1"

_REGISTRY_ACCOUNTS: dict[str, str] = {
    "af-south-1": "510948584623",
    "ap-east-1": "651117190479",
    "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698",
    "ap-northeast-3": "867004704886",
    "ap-south-1": "720646828776",
    "ap-south-2": "628508329040",
    "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285",
    "ap-southeast-3": "951798379941",
    "ap-southeast-4": "106583098589",
    "ca-central-1": "341280168497",
    "ca-west-1": "190319476487",
    "cn-north-1": "450853457545",
    "cn-northwest-1": "451049120500",
    "eu-central-1": "492215442770",
    "eu-central-2": "680994064768",
    "eu-north-1": "662702820516",
    "eu-south-1": "978288397137",
    "eu-south-2": "104374241257",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-west-3": "659782779980",
    "il-central-1": "898809789911",
    "me-central-1": "272398656194",
    "me-south-1": "801668240914",
    "sa-east-1": "737474898029",
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-gov-east-1": "237065988967",
    "us-gov-west-1": "414596584902",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
}


class UnsupportedRegionError(ValueError):
    """Raised when no built-in XGBoost image is known for a region."""


def xgboost_image_uri(region: str) -> str:
    """Return the ECR URI of the built-in XGBoost image in `region`.

    Example
    -------
    >>> xgboost_image_uri("us-east-1")
    '683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1'
    """
    try:
        account = _REGISTRY_ACCOUNTS[region]
    except KeyError:
        raise UnsupportedRegionError(
            f"no built-in XGBoost image is known for region {region!r}; "
            "set the TrainingImage parameter to an image URI"
        ) from None
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/sagemaker-xgboost:{XGBOOST_VERSION}"
