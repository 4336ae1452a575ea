using System.Text.Json.Nodes;

namespace KvAdaQuant.Tests;

/// <summary>Every place in a JSON tree a fuzz test may put another value: (parent, property name or array index).</summary>
internal static class JsonPlaces
{
    public static List<(JsonNode Parent, object Key)> Of(JsonNode node)
    {
        var places = new List<(JsonNode Parent, object Key)>();
        Collect(node, places);
        return places;
    }

    /// <summary>Puts <paramref name="value"/> at <paramref name="place"/>.</summary>
    public static void Set((JsonNode Parent, object Key) place, JsonNode? value)
    {
        if (place.Key is string name)
        {
            place.Parent[name] = value;
        }
        else
        {
            place.Parent[(int)place.Key] = value;
        }
    }

    private static void Collect(JsonNode node, List<(JsonNode Parent, object Key)> places)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (key, child) in o.ToList())
                {
                    places.Add((o, key));
                    if (child is not null)
                    {
                        Collect(child, places);
                    }
                }

                break;
            case JsonArray a:
                for (int i = 0; i < a.Count; i++)
                {
                    places.Add((a, i));
                    if (a[i] is { } child)
                    {
                        Collect(child, places);
                    }
                }

                break;
        }
    }
}
