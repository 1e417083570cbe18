package backup

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob:// URLs
	"gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob" // gs:// URLs
	"gocloud.dev/blob/s3blob"

	"github.com/pagewire/pagewire/config"
)

// OpenBucket opens where cfg says backups go, with the key prefix applied:
// a directory (type file), an S3 bucket (AWS or any S3-compatible store
// at cfg.Endpoint), a GCS bucket or an Azure container. S3 credentials are
// cfg's static keys, else the usual AWS environment variables and files;
// GCS and Azure take theirs from their environment, as gocloud.dev does.
// The caller closes the bucket.
func OpenBucket(ctx context.Context, cfg config.BackupConfig) (*blob.Bucket, error) {
	kind := cfg.Kind()
	bucketName, prefix := cfg.Location()
	var b *blob.Bucket
	var err error
	switch kind {
	case config.BackupTypeFile:
		if prefix == "" {
			return nil, errors.New("backup.path is required with backup.type file: the directory backups go in")
		}
		if err := os.MkdirAll(prefix, 0o755); err != nil {
			return nil, fmt.Errorf("backup.path: %w", err)
		}
		// No sidecar .attrs files (pagewire keeps no metadata), and the
		// temporary file of a write next to its object, so that a rename
		// publishes it.
		b, err = fileblob.OpenBucket(prefix, &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
		return b, err
	case config.BackupTypeS3:
		b, err = openS3(ctx, cfg, bucketName)
	case config.BackupTypeGCS:
		b, err = blob.OpenBucket(ctx, "gs://"+bucketName)
	case config.BackupTypeAzure:
		b, err = blob.OpenBucket(ctx, "azblob://"+bucketName)
	default:
		return nil, errors.New("no backup is configured: set backup.type (file, s3, gcs or azure) in the node's config")
	}
	if err != nil {
		return nil, fmt.Errorf("open the %s backup bucket %q: %w", kind, bucketName, err)
	}
	if prefix != "" {
		b = blob.PrefixedBucket(b, prefix+"/")
	}
	return b, nil
}

// openS3 opens an S3 bucket with the AWS SDK: region and static keys from
// cfg when set, the SDK's usual sources otherwise, and cfg.Endpoint for an
// S3-compatible store.
func openS3(ctx context.Context, cfg config.BackupConfig, bucket string) (*blob.Bucket, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	acfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load the AWS config (AWS_REGION, AWS_ACCESS_KEY_ID, ~/.aws): %w", err)
	}
	if acfg.Region == "" {
		// S3-compatible stores mostly ignore the region, but the SDK
		// signs with one.
		acfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(acfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.ForcePathStyle
		// Checksums only where S3 requires them: S3-compatible stores
		// do not all support the SDK's newer default ones.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return s3blob.OpenBucket(ctx, client, bucket, nil)
}
