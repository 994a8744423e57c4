"""The video library: find videos, probe them, compress them, sample and decode their frames.

    discover_videos(root_or_csv) -> [VideoEntry(id, path)]
    probe_video(path) -> VideoInfo                      (exact frame timestamps, rotation, ...)
    compress_video(src, dst, fps=3, size=224, crop="none") -> info dict
    make_policy({"policy": "fps", "fps": 3}) -> SamplingPolicy
    read_video(path, policy, short_side=224) -> DecodedVideo(frames, selection, native_fps, num_frames)

Every per-video failure raises VideoError(reason, detail); configuration mistakes raise ConfigError.
"""

from stages.video.encode import compress_video, output_size
from stages.video.decode import DecodedVideo, frame_timestamps, read_video
from stages.video.discover import VIDEO_EXTENSIONS, VideoEntry, VideoList, discover_videos
from stages.video.errors import REASONS, VideoError, VideoInterrupted
from stages.video.probe import VideoInfo, probe_video
from stages.video.sampling import POLICIES, FrameSelection, SamplingPolicy, make_policy

__all__ = [
    "DecodedVideo",
    "FrameSelection",
    "POLICIES",
    "REASONS",
    "SamplingPolicy",
    "VIDEO_EXTENSIONS",
    "VideoEntry",
    "VideoError",
    "VideoInterrupted",
    "VideoInfo",
    "VideoList",
    "compress_video",
    "discover_videos",
    "frame_timestamps",
    "make_policy",
    "output_size",
    "probe_video",
    "read_video",
]
