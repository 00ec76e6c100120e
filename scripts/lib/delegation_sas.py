"""A user delegation SAS as the official Python SDK (azure-storage-blob) signs it:
the oracle agent/blob/tests/delegation_sas.rs checks diskferry's against.

Usage: delegation_sas.py JSON  (account, container, expiry, start, version, and
the key: oid, tid, key_start, key_expiry, service, key_version, value)
Prints the SAS query string.
"""
import json
import sys

from azure.storage.blob import ContainerSasPermissions, UserDelegationKey
from azure.storage.blob._shared_access_signature import BlobSharedAccessSignature

a = json.loads(sys.argv[1])
key = UserDelegationKey()
key.signed_oid = a["oid"]
key.signed_tid = a["tid"]
key.signed_start = a["key_start"]
key.signed_expiry = a["key_expiry"]
key.signed_service = a["service"]
key.signed_version = a["key_version"]
key.value = a["value"]
sas = BlobSharedAccessSignature(a["account"], user_delegation_key=key)
# The service version to sign for: the one diskferry's SAS names.
sas.x_ms_version = a["version"]
print(sas.generate_container(a["container"], permission=ContainerSasPermissions(read=True),
                             expiry=a["expiry"], start=a.get("start")))
