"""API serializers, one module per resource (as NetBox's dcim/api/serializers_/)."""

from cmdb.api.serializers.assets import (
    AssetSerializer,
    ChangeSerializer,
)
from cmdb.api.serializers.hosts import (
    HostFactsSerializer,
    HostGroupSerializer,
    HostSerializer,
    NestedHostSerializer,
)
from cmdb.api.serializers.jobs import (
    DispatchedTaskSerializer,
    FetchedFileSerializer,
    HostTaskSerializer,
    JobDispatchedSerializer,
    JobSerializer,
    StreamField,
    StreamSerializer,
)
from cmdb.api.serializers.requests import (
    AbsolutePathField,
    FetchRequestSerializer,
    HostsOrPercentField,
    JobRequestSerializer,
    PushRequestSerializer,
    RerunRequestSerializer,
    SecondsField,
    TargetsSerializer,
    UploadField,
)
from cmdb.api.serializers.responses import (
    BrokerDownSerializer,
    CancelledSerializer,
    DetailSerializer,
    DispatchErrorsSerializer,
    FetchErrorsSerializer,
    PushErrorsSerializer,
    TargetErrorsSerializer,
)

__all__ = [
    "AbsolutePathField",
    "AssetSerializer",
    "BrokerDownSerializer",
    "CancelledSerializer",
    "ChangeSerializer",
    "DetailSerializer",
    "DispatchErrorsSerializer",
    "DispatchedTaskSerializer",
    "FetchErrorsSerializer",
    "FetchRequestSerializer",
    "FetchedFileSerializer",
    "HostFactsSerializer",
    "HostGroupSerializer",
    "HostSerializer",
    "HostTaskSerializer",
    "HostsOrPercentField",
    "JobDispatchedSerializer",
    "JobRequestSerializer",
    "JobSerializer",
    "NestedHostSerializer",
    "PushErrorsSerializer",
    "PushRequestSerializer",
    "RerunRequestSerializer",
    "SecondsField",
    "StreamField",
    "StreamSerializer",
    "TargetErrorsSerializer",
    "TargetsSerializer",
    "UploadField",
]
