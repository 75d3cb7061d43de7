//go:build !linux

package netstack

import "errors"

// AttachTUN needs Linux; elsewhere it returns an error.
func AttachTUN(cfg TUNConfig) (*Host, error) {
	return nil, errors.New("netstack: TUN attachment needs Linux")
}
