"""Storage on any fsspec URI: `Store`, S3 options and the options rule, the one storage failure."""
from .failures import REFUSED, STORAGE_RETRY_S, StorageError, StorageRefused, transient
from .store import Store, content_tag, read_uri, write_uri
from .uri_options import (S3_ATTEMPTS, S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT, SECRET_OPTIONS, cli_options, options_for,
                          parse_storage_options, s3_options)

__all__ = ["REFUSED", "S3_ATTEMPTS", "S3_CONNECT_TIMEOUT", "S3_READ_TIMEOUT", "SECRET_OPTIONS", "STORAGE_RETRY_S",
           "StorageError", "StorageRefused", "Store", "cli_options", "content_tag", "options_for",
           "parse_storage_options", "read_uri", "s3_options", "transient", "write_uri"]
