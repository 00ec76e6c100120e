#!/usr/bin/env python3
"""Helpers for the page blob benchmark, on the Python azure-storage-blob SDK
(the peer 'what users run today'), against Azurite's well-known account.

    azblob.py sas ENDPOINT CONTAINER              print a container SAS (1 h)
    azblob.py mkcontainer ENDPOINT CONTAINER
    azblob.py delete ENDPOINT CONTAINER PREFIX     delete blobs (and snapshots) by prefix
    azblob.py upload ENDPOINT CONTAINER BLOB FILE  upload FILE as a page blob (max_concurrency=16)
"""
import datetime
import sys

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Azurite 3.35 serves up to this version; the SDK's default is newer.
API = "2025-11-05"


def service(endpoint):
    return BlobServiceClient(f"{endpoint}/{ACCOUNT}", credential={"account_name": ACCOUNT, "account_key": KEY},
                             api_version=API)


def main():
    cmd, endpoint, container = sys.argv[1], sys.argv[2], sys.argv[3]
    if cmd == "sas":
        print(generate_container_sas(ACCOUNT, container, account_key=KEY,
                                     permission=ContainerSasPermissions(read=True, write=True, create=True,
                                                                        add=True, delete=True, list=True),
                                     expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)))
    elif cmd == "mkcontainer":
        try:
            service(endpoint).create_container(container)
        except Exception as e:  # already exists
            if "ContainerAlreadyExists" not in str(e):
                raise
    elif cmd == "delete":
        c = service(endpoint).get_container_client(container)
        for b in c.list_blobs(name_starts_with=sys.argv[4]):
            c.delete_blob(b.name, delete_snapshots="include")
    elif cmd == "upload":
        blob, path = sys.argv[4], sys.argv[5]
        c = service(endpoint).get_container_client(container)
        with open(path, "rb") as f:
            c.upload_blob(blob, f, blob_type="PageBlob", max_concurrency=16, overwrite=True)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
