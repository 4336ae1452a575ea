using System.Diagnostics;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace KvAdaQuant.Cli.Serve;

/// <summary><c>kvaq serve</c>: llama-server's <c>GET /props</c> and slot actions (<c>POST /slots/{id}?action=save|restore|erase</c>).</summary>
internal sealed partial class KvaqServer
{
    // llama-server's GET /props: the defaults of a request, the slots, the model and template, kvaq's version.
    private Task Props(HttpContext c)
    {
        var d = _model.Defaults;
        var settings = NativeSettings.Of(d, _model.Ctx, _model.Id, stream: false, cachePrompt: true);
        string version = typeof(KvaqServer).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion ?? "unknown";
        return Write(c, 200, new PropsResponse(settings, _model.Slots, _model.Path, _model.Template.Name, $"kvaq {version}", _model.Kv, _model.Device, _model.ToolFormat.Name), ServeJsonContext.Relaxed.PropsResponse);
    }

    // llama-server's POST /slots/{id}?action=save|restore|erase: a slot's KV cache and tokens to a state file in
    // --slot-save-path, back from one, or cleared; only while no request holds the slot.
    private async Task SlotAction(HttpContext c)
    {
        try
        {
            string raw = c.Request.RouteValues["id"] as string ?? string.Empty;
            if (!int.TryParse(raw, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) || id >= _model.Slots)
            {
                throw new ServeRequestException(400, $"invalid slot id '{raw}': this server has slot{(_model.Slots == 1 ? " 0" : $"s 0 to {_model.Slots - 1}")} (kvaq serve --parallel)", "id_slot");
            }

            string action = c.Request.Query["action"].ToString();
            if (action is not ("save" or "restore" or "erase"))
            {
                throw new ServeRequestException(400, action.Length == 0
                    ? "no action: POST /slots/{id}?action=save, restore or erase"
                    : $"invalid action '{action}': expected save, restore or erase", "action");
            }

            string? name = null, path = null;
            if (action != "erase")
            {
                string folder = _model.SlotSavePath
                    ?? throw new ServeRequestException(501, $"this server does not {action} slots; start it with --slot-save-path FOLDER", null, "not_supported_error");
                using var doc = await ReadBody(c);
                name = CompletionRequest.Field(doc.RootElement, "filename") is { } f
                    ? f.ValueKind == JsonValueKind.String ? f.GetString()! : throw CompletionRequest.Invalid("filename", $"filename must be a string, got {CompletionRequest.Raw(f)}")
                    : throw CompletionRequest.Invalid("filename", $"filename is required (the file in --slot-save-path to {action})");
                if (ServedModel.SlotFileNameProblem(name) is { } problem)
                {
                    throw CompletionRequest.Invalid("filename", $"invalid filename '{name}': it {problem}");
                }

                path = System.IO.Path.Combine(folder, name);
            }

            var slot = _model.TakeSlot(id)
                ?? throw new ServeRequestException(503, $"slot {id} is busy: a request is using it; try again when it ends", null, "unavailable_error");
            try
            {
                var sw = Stopwatch.StartNew();
                switch (action)
                {
                    case "save":
                        var (saved, written) = await Task.Run(() => SlotFile(() => slot.SaveState(path!), path!, name!, saving: true), _stopping);
                        c.Items["kvaq.note"] = $"slot {id}: {saved} tokens saved to {name} ({written:N0} bytes)";
                        await Write(c, 200, new SlotActionResponse(id, name, NSaved: saved, NWritten: written, Timings: new SlotActionTimings(SaveMs: sw.Elapsed.TotalMilliseconds)), ServeJsonContext.Relaxed.SlotActionResponse);
                        break;
                    case "restore":
                        var (restored, read) = await Task.Run(() => SlotFile(() => slot.RestoreState(path!), path!, name!, saving: false), _stopping);
                        c.Items["kvaq.note"] = $"slot {id}: {restored} tokens restored from {name} ({read:N0} bytes)";
                        await Write(c, 200, new SlotActionResponse(id, name, NRestored: restored, NRead: read, Timings: new SlotActionTimings(RestoreMs: sw.Elapsed.TotalMilliseconds)), ServeJsonContext.Relaxed.SlotActionResponse);
                        break;
                    default:
                        int erased = slot.Erase();
                        c.Items["kvaq.note"] = $"slot {id}: {erased} tokens erased";
                        await Write(c, 200, new SlotActionResponse(id, NErased: erased), ServeJsonContext.Relaxed.SlotActionResponse);
                        break;
                }
            }
            finally
            {
                _model.Release(slot);
            }
        }
        catch (ServeRequestException e)
        {
            await WriteError(c, e);
        }
    }

    // A slot save or restore, its failures as the client's errors: a file that is missing, damaged, or from another model,
    // plan or larger context (400 or 404, the loader's message), a cache that cannot be saved (501), a failed write (500).
    // Messages name the file as the client did, not by the server's folder.
    private static (int Tokens, long Bytes) SlotFile(Func<(int Tokens, long Bytes)> run, string path, string name, bool saving)
    {
        string Named(string message) => message.Replace($"{path}: ", string.Empty, StringComparison.Ordinal).Replace(path, name, StringComparison.Ordinal);

        try
        {
            return run();
        }
        catch (FileNotFoundException)
        {
            throw new ServeRequestException(404, $"no slot file '{name}' in --slot-save-path", "filename", "not_found_error");
        }
        catch (NotSupportedException e)
        {
            throw new ServeRequestException(501, e.Message, null, "not_supported_error");
        }
        catch (Exception e) when (!saving && e is InvalidDataException or KvAdaQuant.KvCache.KvCacheException or IOException or ArgumentException)
        {
            throw new ServeRequestException(400, $"cannot restore '{name}': {Named(e.Message)}", "filename");
        }
        catch (Exception e) when (saving && e is IOException or UnauthorizedAccessException or KvAdaQuant.KvCache.KvCacheException)
        {
            throw new ServeRequestException(500, $"cannot save '{name}': {Named(e.Message)}", null, "server_error");
        }
    }
}
