// Package remote opens the shared dedupe index a root's configuration
// names (Redis or DynamoDB); a root without one uses the BoltDB file the
// store opens itself. Opening makes no call to the server: one that is
// down costs dedupe, never the start.
package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	goredis "github.com/redis/go-redis/v9"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/dynamodb"
	"github.com/pier-oci/pier/store/cache/redis"
)

// Open returns the index cfg names, or nil for the BoltDB file. Paths are
// recorded relative to the root (a local root's form, pier's and zot's).
func Open(cfg configs.CacheConfig, log *slog.Logger) (cache.Cache, error) {
	switch cfg.Driver {
	case "":
		return nil, nil
	case "redis":
		quietRedis(log)
		c, err := redisClient(cfg.Redis)
		if err != nil {
			return nil, fmt.Errorf("redis dedupe index: %w", err)
		}
		return redis.New(redis.Options{Client: c, KeyPrefix: cfg.Redis.KeyPrefix}), nil
	case "dynamodb":
		d := cfg.DynamoDB
		opts := []func(*awsconfig.LoadOptions) error{}
		if d.Region != "" {
			opts = append(opts, awsconfig.WithRegion(d.Region))
		}
		ac, err := awsconfig.LoadDefaultConfig(context.Background(), opts...)
		if err != nil {
			return nil, fmt.Errorf("dynamodb dedupe index: %w", err)
		}
		if ac.Region == "" {
			return nil, fmt.Errorf("dynamodb dedupe index: no region: set cacheDriver.region, or AWS_REGION")
		}
		client := awsdynamodb.NewFromConfig(ac, func(o *awsdynamodb.Options) {
			if d.Endpoint != "" {
				o.BaseEndpoint = aws.String(d.Endpoint)
			}
		})
		return dynamodb.New(dynamodb.Options{Client: client, Table: d.TableName}), nil
	}
	return nil, fmt.Errorf("unknown dedupe index driver %q", cfg.Driver)
}

// redisClient connects as zot does: a URL (a cluster's when it has addr
// parameters), else the individual keys. Every call honours its
// context's deadline, whatever the file says.
func redisClient(r *configs.RedisConfig) (goredis.UniversalClient, error) {
	if r.URL != "" {
		if strings.Contains(r.URL, "addr=") {
			o, err := goredis.ParseClusterURL(r.URL)
			if err != nil {
				return nil, fmt.Errorf("url: %w", err)
			}
			o.ContextTimeoutEnabled = true
			return goredis.NewClusterClient(o), nil
		}
		o, err := goredis.ParseURL(r.URL)
		if err != nil {
			return nil, fmt.Errorf("url: %w", err)
		}
		o.ContextTimeoutEnabled = true
		return goredis.NewClient(o), nil
	}
	o := &goredis.UniversalOptions{
		Addrs: r.Addrs, MasterName: r.MasterName, DB: r.DB, Protocol: r.Protocol, ClientName: r.ClientName,
		Username: r.Username, Password: r.Password, SentinelUsername: r.SentinelUsername, SentinelPassword: r.SentinelPassword,
		MaxRetries: r.MaxRetries, MinRetryBackoff: r.MinRetryBackoff, MaxRetryBackoff: r.MaxRetryBackoff,
		DialTimeout: r.DialTimeout, ReadTimeout: r.ReadTimeout, WriteTimeout: r.WriteTimeout, ContextTimeoutEnabled: true,
		PoolFIFO: r.PoolFIFO, PoolSize: r.PoolSize, PoolTimeout: r.PoolTimeout, MinIdleConns: r.MinIdleConns,
		MaxIdleConns: r.MaxIdleConns, MaxActiveConns: r.MaxActiveConns, ConnMaxIdleTime: r.ConnMaxIdleTime,
		ConnMaxLifetime: r.ConnMaxLifetime, MaxRedirects: r.MaxRedirects, ReadOnly: r.ReadOnly,
		RouteByLatency: r.RouteByLatency, RouteRandomly: r.RouteRandomly, DisableIdentity: r.DisableIdentity,
		IdentitySuffix: r.IdentitySuffix, UnstableResp3: r.UnstableResp3,
	}
	if len(o.Addrs) == 0 {
		o.Addrs = []string{"127.0.0.1:6379"}
	}
	if r.TLS {
		t, err := tlsConfig(r)
		if err != nil {
			return nil, err
		}
		o.TLSConfig = t
	}
	return goredis.NewUniversalClient(o), nil
}

func tlsConfig(r *configs.RedisConfig) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.TLSServerName}
	if r.TLSCACert != "" {
		pem, err := os.ReadFile(r.TLSCACert)
		if err != nil {
			return nil, fmt.Errorf("tls_cacert: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_cacert: %s holds no PEM certificate", r.TLSCACert)
		}
		t.RootCAs = pool
	}
	if r.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(r.TLSCert, r.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("tls_cert: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

var quietOnce sync.Once

// quietRedis sends go-redis's own log lines (reconnects, sentinel
// changes) to pier's log at debug level instead of standard error.
// go-redis keeps its logger in a global, so this is done once.
func quietRedis(log *slog.Logger) {
	quietOnce.Do(func() { goredis.SetLogger(redisLogger{log}) })
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Debug("redis: " + fmt.Sprintf(format, v...))
}
