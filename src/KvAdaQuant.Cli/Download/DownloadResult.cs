namespace KvAdaQuant.Cli.Download;

/// <summary>Outcome of a <see cref="ResumableDownloader"/> run.</summary>
/// <param name="Path">the finished file.</param>
/// <param name="Bytes">its size.</param>
/// <param name="Sha256">its SHA-256, lower-case hex.</param>
/// <param name="Verified">whether it was checked against an expected hash.</param>
/// <param name="ChecksumSource">where the expected hash came from: "option", "sidecar" or "none".</param>
/// <param name="ResumedFrom">bytes already present in the .part file when the first request was made.</param>
/// <param name="Requests">HTTP requests made for the file (more than one when the transfer was resumed).</param>
/// <param name="AlreadyPresent">the file already existed and was only verified.</param>
public sealed record DownloadResult(string Path, long Bytes, string Sha256, bool Verified, string ChecksumSource, long ResumedFrom, int Requests, bool AlreadyPresent);
