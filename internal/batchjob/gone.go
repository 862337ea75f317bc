package batchjob

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gone treats NOT_FOUND as done: a delete repeated after a crash finds nothing.
func gone(err error) error {
	if status.Code(err) == codes.NotFound {
		return nil
	}
	return err
}
