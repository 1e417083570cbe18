package server

import (
	"context"
	"fmt"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/wire"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// maxIO bounds one read or write: the mount never asks for more than its
// max_write (1 MiB).
const maxIO = 4 << 20

// storageService serves the block protocol from a Store.
type storageService struct {
	storagev1.UnimplementedStorageServiceServer
	store *engine.Store
	// allowInternal accepts the node's own writes on a replica; only the
	// in-process channel, which only this node's mount reaches, sets it.
	allowInternal bool
	mounts        *mountSession // shared by every listener's service
}

// writer tells who sends a request from its internal flag: the node's own
// apply worker, through the in-process channel only, or an app.
func (s *storageService) writer(internal bool) (engine.Writer, error) {
	switch {
	case !internal:
		return engine.App, nil
	case !s.allowInternal:
		return engine.App, wire.ToStatus(fmt.Errorf("%w: internal writes are accepted only from the node's own mount", pagewire.ErrInvalidArgument))
	}
	return engine.Applier, nil
}

var _ storagev1.StorageServiceServer = (*storageService)(nil)

func (s *storageService) ListFiles(context.Context, *storagev1.ListFilesRequest) (*storagev1.ListFilesResponse, error) {
	files := s.store.List()
	resp := &storagev1.ListFilesResponse{Files: make([]*storagev1.FileInfo, len(files))}
	for i, fi := range files {
		resp.Files[i] = fileInfoToProto(fi)
	}
	return resp, nil
}

func (s *storageService) LookupFile(_ context.Context, req *storagev1.LookupFileRequest) (*storagev1.LookupFileResponse, error) {
	fi, err := s.store.Lookup(req.GetName())
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.LookupFileResponse{File: fileInfoToProto(fi)}, nil
}

func (s *storageService) CreateFile(_ context.Context, req *storagev1.CreateFileRequest) (*storagev1.CreateFileResponse, error) {
	by, err := s.writer(req.GetInternal())
	if err != nil {
		return nil, err
	}
	fi, err := s.store.Create(req.GetName(), by)
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.CreateFileResponse{File: fileInfoToProto(fi)}, nil
}

func (s *storageService) StatFile(_ context.Context, req *storagev1.StatFileRequest) (*storagev1.StatFileResponse, error) {
	fi, err := s.store.Stat(req.GetFileId())
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.StatFileResponse{File: fileInfoToProto(fi)}, nil
}

func (s *storageService) DeleteFile(_ context.Context, req *storagev1.DeleteFileRequest) (*storagev1.DeleteFileResponse, error) {
	if err := s.store.Delete(req.GetName()); err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.DeleteFileResponse{}, nil
}

func (s *storageService) OpenFile(_ context.Context, req *storagev1.OpenFileRequest) (*storagev1.OpenFileResponse, error) {
	by, err := s.writer(req.GetInternal())
	if err != nil {
		return nil, err
	}
	fi, err := s.store.Open(req.GetFileId(), req.GetWrite(), by)
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.OpenFileResponse{File: fileInfoToProto(fi)}, nil
}

func (s *storageService) CloseFile(_ context.Context, req *storagev1.CloseFileRequest) (*storagev1.CloseFileResponse, error) {
	s.store.CloseHandle(req.GetFileId())
	return &storagev1.CloseFileResponse{}, nil
}

func (s *storageService) ReadFile(_ context.Context, req *storagev1.ReadFileRequest) (*storagev1.ReadFileResponse, error) {
	if req.GetLength() < 0 || req.GetLength() > maxIO {
		return nil, wire.ToStatus(fmt.Errorf("%w: read length %d is outside 0..%d", pagewire.ErrInvalidArgument, req.GetLength(), maxIO))
	}
	buf := make([]byte, req.GetLength())
	n, err := s.store.ReadAt(req.GetFileId(), buf, req.GetOffset())
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.ReadFileResponse{Data: buf[:n]}, nil
}

func (s *storageService) WriteFile(_ context.Context, req *storagev1.WriteFileRequest) (*storagev1.WriteFileResponse, error) {
	if len(req.GetData()) > maxIO {
		return nil, wire.ToStatus(fmt.Errorf("%w: write of %d bytes exceeds %d", pagewire.ErrInvalidArgument, len(req.GetData()), maxIO))
	}
	by, err := s.writer(req.GetInternal())
	if err != nil {
		return nil, err
	}
	size, txid, err := s.store.WriteAt(req.GetFileId(), req.GetData(), req.GetOffset(), by)
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.WriteFileResponse{Size: size, Txid: uint64(txid)}, nil
}

func (s *storageService) TruncateFile(_ context.Context, req *storagev1.TruncateFileRequest) (*storagev1.TruncateFileResponse, error) {
	by, err := s.writer(req.GetInternal())
	if err != nil {
		return nil, err
	}
	fi, err := s.store.Truncate(req.GetFileId(), req.GetSize(), by)
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.TruncateFileResponse{File: fileInfoToProto(fi)}, nil
}

func (s *storageService) SyncFile(_ context.Context, req *storagev1.SyncFileRequest) (*storagev1.SyncFileResponse, error) {
	by, err := s.writer(req.GetInternal())
	if err != nil {
		return nil, err
	}
	if err := s.store.Sync(req.GetFileId(), by); err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.SyncFileResponse{}, nil
}

func (s *storageService) SyncDirectory(context.Context, *storagev1.SyncDirectoryRequest) (*storagev1.SyncDirectoryResponse, error) {
	if err := s.store.SyncDir(); err != nil {
		return nil, wire.ToStatus(err)
	}
	return &storagev1.SyncDirectoryResponse{}, nil
}

func (s *storageService) WatchFiles(_ *storagev1.WatchFilesRequest, stream storagev1.StorageService_WatchFilesServer) error {
	w := s.store.Watch()
	defer w.Close()
	if err := stream.Send(&storagev1.WatchFilesResponse{}); err != nil {
		return err
	}
	for {
		changes, err := w.Next(stream.Context())
		if err != nil {
			return nil // the mount went away
		}
		resp := &storagev1.WatchFilesResponse{Changes: make([]*storagev1.FileChange, len(changes))}
		for i, c := range changes {
			resp.Changes[i] = fileChangeToProto(c)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
