package store

import "github.com/leakguard/leakguard/pkg/cniplugin/record"

// SaveTombstone writes r as a new tombstone (tests only; DEL uses Tombstone,
// which moves the live record instead).
func (s *Store) SaveTombstone(r *record.Record) (string, error) {
	if err := s.makeTombDir(); err != nil {
		return "", err
	}
	t := *r
	t.Pin, t.TombstonedAt = nil, nil
	path := s.tombPath(r.Key)
	return path, s.writeAtomic(path, &t, "")
}
