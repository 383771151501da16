package s3

import (
	"log/slog"

	"github.com/pier-oci/pier/configs"
)

// FromConfig is the driver's Config for a store's storageDriver, as
// configs read and checked it.
func FromConfig(c *configs.S3Config, readOnly bool, log *slog.Logger) Config {
	return Config{
		Region: c.Region, Bucket: c.Bucket, Endpoint: c.RegionEndpoint, ForcePathStyle: c.ForcePathStyle,
		Prefix: c.KeyPrefix(), Secure: c.Secure, SkipVerify: c.SkipVerify,
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, SessionToken: c.SessionToken,
		ChunkSize: c.ChunkSize, MultipartCopyChunkSize: c.MultipartCopyChunkSize,
		MultipartCopyMaxConcurrency: c.MultipartCopyMaxConcurrency, MultipartCopyThresholdSize: c.MultipartCopyThresholdSize,
		StorageClass: c.StorageClass, ObjectACL: c.ObjectACL, Encrypt: c.Encrypt, KeyID: c.KeyID,
		UserAgent: c.UserAgent, Accelerate: c.Accelerate, DualStack: c.UseDualStack, LogLevel: c.LogLevel,
		Timeout: c.RequestTimeout, ReadOnly: readOnly, Logger: log,
	}
}
