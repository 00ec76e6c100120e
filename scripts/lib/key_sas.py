"""SAS tokens signed with an account key, as the official Python SDK
(azure-storage-blob) signs them: the oracle agent/blob/tests/key_sas.rs checks
diskferry's container and account SAS against.

Usage: key_sas.py JSON  (kind: "container" or "account"; account, key, version,
start, expiry, sp; container for a container SAS; ss and srt for an account SAS)
Prints the SAS query string.
"""
import json
import sys

from azure.storage.blob._shared.shared_access_signature import SharedAccessSignature
from azure.storage.blob._shared_access_signature import BlobSharedAccessSignature

a = json.loads(sys.argv[1])
if a["kind"] == "container":
    sas = BlobSharedAccessSignature(a["account"], account_key=a["key"])
    # The service version to sign for: the one diskferry's SAS names.
    sas.x_ms_version = a["version"]
    print(sas.generate_container(a["container"], permission=a["sp"], expiry=a["expiry"], start=a["start"]))
else:
    sas = SharedAccessSignature(a["account"], a["key"], x_ms_version=a["version"])
    print(sas.generate_account(a["ss"], a["srt"], a["sp"], a["expiry"], start=a["start"]))
