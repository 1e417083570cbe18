package consul

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/leaser"
)

var _ leaser.Board = (*Leaser)(nil)

func (l *Leaser) positionsPrefix() string { return l.cfg.Key + "/positions/" }

// Publish writes p under <key>/positions/<hostname>.
func (l *Leaser) Publish(ctx context.Context, p leaser.Position) error {
	if p.Hostname == "" || strings.Contains(p.Hostname, "/") {
		return fmt.Errorf("leaser: cannot publish a position for hostname %q", p.Hostname)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := l.c.KV().Put(&api.KVPair{Key: l.positionsPrefix() + p.Hostname, Value: b}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return l.unreachable("publish this node's position", err)
	}
	return nil
}

// Positions lists <key>/positions/. Values that do not parse are skipped
// with a log line: they can only be from something else writing there.
func (l *Leaser) Positions(ctx context.Context, index uint64, wait time.Duration) ([]leaser.Published, uint64, error) {
	opts := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	pairs, meta, err := l.c.KV().List(l.positionsPrefix(), opts)
	if err != nil {
		return nil, index, l.unreachable("read the candidates' positions", err)
	}
	var out []leaser.Published
	for _, kv := range pairs {
		var p leaser.Position
		if err := json.Unmarshal(kv.Value, &p); err != nil || p.Hostname == "" {
			l.log.Warn("ignoring a position that is not pagewire's", logKeyKey, kv.Key, logkey.Error, errors.Join(err, pagewire.ErrCorrupt))
			continue
		}
		out = append(out, leaser.Published{Position: p, Index: kv.ModifyIndex})
	}
	return out, meta.LastIndex, nil
}
